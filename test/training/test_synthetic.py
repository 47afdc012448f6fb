"""The synthetic world: HDL-64E scans, camera images, labels, and the SemanticKITTI folder writer."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from elite_ros.labels import CLASS_NAMES, LEARNING_MAP, NUM_CLASSES, split_label, to_training_ids
from elite_ros_training.cli import main as train_main
from elite_ros_training.data.projection import project_points, projection_matrix
from elite_ros_training.synthetic import (
    IMAGE_HEIGHT,
    IMAGE_WIDTH,
    KITTI_P2,
    KITTI_TR,
    SyntheticSequence,
    generate_sequence,
)
from elite_ros_training.synthetic import sequence as sequence_module
from elite_ros_training.synthetic.camera import PinholeCover, camera_rays_lidar_frame
from elite_ros_training.synthetic.ground import roughness
from elite_ros_training.synthetic.lidar import (
    SphericalCover,
    azimuths,
    beam_elevations,
    ego_occlusion,
    sensor_directions,
)
from elite_ros_training.synthetic.materials import Material
from elite_ros_training.synthetic.pose import EgoPose
from elite_ros_training.synthetic.primitives import PrimitiveBuilder, intersect
from elite_ros_training.synthetic.raycast import cast
from elite_ros_training.synthetic.scene import RAW, Scene, SceneConfig, generate_scene
from elite_ros_training.synthetic.vehicles import car_parts, random_car

SEED, FRAMES = 7, 40
THINGS = {"car", "bicycle", "motorcycle", "truck", "other-vehicle", "person", "bicyclist", "motorcyclist"}
CLASS_ID = {name: i for i, name in enumerate(CLASS_NAMES)}


@pytest.fixture(scope="module")
def sequence() -> SyntheticSequence:
    return SyntheticSequence(frames=FRAMES, seed=SEED)


@pytest.fixture(scope="module")
def first(sequence):
    return sequence.frame(0)


@pytest.fixture(scope="module")
def last(sequence):
    return sequence.frame(FRAMES - 1)


def test_scan_looks_like_an_hdl64e_scan(first):
    scan = first.scan
    n = scan.xyz.shape[0]
    assert 100_000 <= n <= 130_000
    assert scan.xyz.dtype == np.float32 and scan.xyz.shape == (n, 3) and np.isfinite(scan.xyz).all()
    assert scan.intensity.dtype == np.float32 and scan.intensity.min() >= 0.0 and scan.intensity.max() <= 1.0
    assert scan.label.dtype == np.uint32 and scan.label.shape == (n,)
    distance = np.linalg.norm(scan.xyz, axis=1)
    assert distance.max() < 120.0 and distance.min() > 1.0
    elevation = np.degrees(np.arcsin(scan.xyz[:, 2] / distance))
    assert -25.5 < elevation.min() and elevation.max() < 2.5  # 2 cm noise bends angles only a little nearby
    assert set(np.unique(scan.ring)) <= set(range(64)) and len(np.unique(scan.ring)) >= 60
    # the ground ring of the lowest beam: 1.73 m / tan(23.6 deg) = 3.96 m, the sensor tilted by up to ~2 deg
    ground = np.isin(to_training_ids(scan.label), [CLASS_ID[c] for c in ("road", "parking", "sidewalk", "terrain")])
    lowest = distance[(scan.ring == 63) & ground]
    assert 3.6 < np.median(lowest) < 4.4


def test_every_point_is_labelled_with_classes_and_instances(first):
    semantic, instance = split_label(first.scan.label)
    assert set(np.unique(semantic)) <= set(LEARNING_MAP)
    train = to_training_ids(first.scan.label)
    assert (train > 0).all()
    thing = np.isin(train, [CLASS_ID[c] for c in THINGS])
    assert (instance[thing] > 0).all() and (instance[~thing] == 0).all()
    for inst in np.unique(instance[thing]):  # one class per instance
        assert len(np.unique(train[instance == inst])) == 1
    assert (semantic == RAW["lane-marking"]).any()  # raw 60, learnt as road
    assert set(to_training_ids(np.array([RAW["lane-marking"]]))) == {CLASS_ID["road"]}


def test_a_frame_has_the_street_classes_and_a_short_sequence_has_all_19(first, last):
    in_first = {CLASS_NAMES[c] for c in np.unique(to_training_ids(first.scan.label))}
    stuff = set(CLASS_NAMES[1:]) - THINGS
    assert stuff <= in_first
    assert {"car", "person", "bicyclist"} <= in_first
    both = in_first | {CLASS_NAMES[c] for c in np.unique(to_training_ids(last.scan.label))}
    assert both == set(CLASS_NAMES[1:])


def test_intensity_follows_the_material(first, last):
    """Paint and sign faces are bright, car paint is dark (mostly 0, like KITTI's), intensity fades far away."""
    semantic = np.concatenate([split_label(f.scan.label)[0] for f in (first, last)])
    intensity = np.concatenate([f.scan.intensity for f in (first, last)])
    distance = np.concatenate([np.linalg.norm(f.scan.xyz, axis=1) for f in (first, last)])
    near = distance < 20.0
    road = intensity[near & (semantic == RAW["road"])].mean()
    assert intensity[near & (semantic == RAW["lane-marking"])].mean() > road + 0.2
    assert intensity[semantic == RAW["traffic-sign"]].max() > 0.8
    car = intensity[semantic == RAW["car"]]
    assert np.median(car) < 0.05 and np.mean(car == 0.0) > 0.3
    assert np.mean(intensity[(distance > 60.0) & (semantic == RAW["road"])] == 0.0) > 0.5
    assert intensity.std() > 0.05
    np.testing.assert_allclose(intensity * 100.0, np.round(intensity * 100.0), atol=1e-3)  # 0.01 steps


def test_camera_image_and_class_map(first):
    cam = first.camera
    assert cam.image.shape == (IMAGE_HEIGHT, IMAGE_WIDTH, 3) and cam.image.dtype == np.uint8
    assert cam.class_map.shape == (IMAGE_HEIGHT, IMAGE_WIDTH) and cam.class_map.dtype == np.uint8
    assert cam.class_map.max() < NUM_CLASSES
    assert cam.class_map[0, IMAGE_WIDTH // 2] == 0  # sky above the street
    assert cam.class_map[-1, IMAGE_WIDTH // 2] == CLASS_ID["road"]  # road below the camera
    assert len(np.unique(cam.class_map)) >= 15
    thing = np.isin(cam.class_map, [CLASS_ID[c] for c in THINGS])
    assert (cam.instance_map[thing] > 0).all() and (cam.instance_map[~thing] == 0).all()


def test_classes_that_look_alike_to_a_lidar_differ_in_the_image(first, last):
    """Road / parking / sidewalk / terrain and vegetation / fence: mean colours clearly apart."""
    image = np.concatenate([f.camera.image for f in (first, last)]).astype(np.float64)
    class_map = np.concatenate([f.camera.class_map for f in (first, last)])
    means = {}
    for name in ("road", "parking", "sidewalk", "terrain", "vegetation", "fence", "other-ground"):
        mask = class_map == CLASS_ID[name]
        assert mask.sum() > 100, name  # enough pixels for a mean colour
        means[name] = image[mask].mean(axis=0)
    for a, b in [("road", "parking"), ("road", "sidewalk"), ("parking", "sidewalk"), ("sidewalk", "terrain"),
                 ("road", "terrain"), ("vegetation", "fence"), ("terrain", "other-ground")]:
        assert np.linalg.norm(means[a] - means[b]) > 15.0, (a, b, means[a], means[b])
    # textures: paving joints, grass noise, leaves: more than flat colour plus sensor noise
    for name in ("sidewalk", "terrain", "vegetation", "fence"):
        assert image[class_map == CLASS_ID[name]].std(axis=0).mean() > 8.0, name


@pytest.mark.parametrize("which", ["first", "last"])
def test_projected_points_land_on_pixels_of_their_class(which, request):
    frame = request.getfixturevalue(which)
    train = to_training_ids(frame.scan.label)
    projection = project_points(frame.scan.xyz, projection_matrix(KITTI_P2, KITTI_TR), IMAGE_WIDTH, IMAGE_HEIGHT)
    assert len(projection.index) > 10_000
    pixel_class = frame.camera.class_map[projection.pixels[:, 0], projection.pixels[:, 1]]
    assert (pixel_class == train[projection.index]).mean() >= 0.95


def test_deterministic_by_seed(sequence, first):
    again = SyntheticSequence(frames=2, seed=SEED).frame(0)  # a shorter drive of the same world
    np.testing.assert_array_equal(again.scan.xyz, first.scan.xyz)
    np.testing.assert_array_equal(again.scan.label, first.scan.label)
    np.testing.assert_array_equal(again.scan.intensity, first.scan.intensity)
    np.testing.assert_array_equal(again.camera.image, first.camera.image)
    other = SyntheticSequence(frames=2, seed=SEED + 1)
    n = min(len(other.scene.primitives), len(sequence.scene.primitives))
    assert not np.array_equal(other.scene.primitives.center[:n], sequence.scene.primitives.center[:n])


def test_ego_moves_along_the_street(sequence):
    poses = sequence.camera_poses()
    np.testing.assert_allclose(poses[0], np.eye(4)[:3], atol=1e-12)
    forward = poses[-1][2, 3]  # KITTI camera frame: z forward
    assert 6.0 * 3.9 - 0.5 < forward < 10.0 * 3.9 + 0.5  # 6..10 m/s over 3.9 s
    assert abs(poses[-1][0, 3]) < 1.5
    lateral = np.array([p.y for p in sequence.poses])
    lane = sequence.scene.plan.ego_lane_y
    assert np.abs(lateral - lane).max() <= 0.2 + 0.1  # weaving inside the ego lane (plus the mount lean)
    # the car stands on the sloping road: the LiDAR is 1.73 m above the ground under it, tilted with it
    for pose in sequence.poses[::10]:
        ground = float(sequence.scene.ground.height(pose.x, pose.y))
        assert abs(pose.z - ground - 1.73) < 0.1
        assert abs(pose.pitch) < np.deg2rad(7.0) and abs(pose.roll) < np.deg2rad(4.0)


def test_calibration_constants_are_kitti_seq00(data_dir: Path):
    values = {}
    for line in (data_dir / "kitti_odometry" / "seq00" / "calib.txt").read_text().splitlines():
        key, _, numbers = line.partition(":")
        values[key.strip()] = np.array(numbers.split(), np.float64).reshape(3, 4)
    np.testing.assert_allclose(KITTI_P2, values["P2"], rtol=1e-9)
    np.testing.assert_allclose(KITTI_TR, values["Tr"], rtol=1e-9)
    text = sequence_module.calib_text()
    for key, matrix in values.items():
        line = next(row for row in text.splitlines() if row.startswith(key + ":"))
        np.testing.assert_allclose(np.array(line.split()[1:], float).reshape(3, 4), matrix, rtol=1e-9)


def test_camera_rays_reproject_to_their_pixels():
    centre, dirs = camera_rays_lidar_frame()
    p = projection_matrix(KITTI_P2, KITTI_TR)
    rows, cols = np.array([0, 100, 374, 200]), np.array([0, 621, 1241, 1000])
    points = centre + 17.0 * dirs[rows, cols]
    uv = (points @ p[:, :3].T + p[:, 3])
    uv = uv[:, :2] / uv[:, 2:]
    np.testing.assert_allclose(uv, np.stack([cols + 0.5, rows + 0.5], 1), atol=1e-6)


def test_primitive_intersections_are_exact():
    b = PrimitiveBuilder()
    b.box((10.0, 0.0, 0.0), (1.0, 2.0, 3.0), 0.0, RAW["building"], 0, Material.FACADE)
    b.box((10.0, 0.0, 0.0), (1.0, 1.0, 1.0), np.pi / 4, RAW["building"], 0, Material.FACADE)
    b.cylinder(5.0, 0.0, -1.0, 1.0, 0.5, RAW["pole"], 0, Material.METAL)
    b.ellipsoid((0.0, 8.0, 0.0), (1.0, 2.0, 1.0), 0.0, RAW["vegetation"], 0, Material.FOLIAGE)
    prims = b.build()
    origin = np.zeros(3)
    x, y, down = np.array([[1.0, 0, 0]]), np.array([[0, 1.0, 0]]), np.array([[0, 0, -1.0]])
    assert intersect(prims, 0, origin, x)[0] == pytest.approx(9.0)
    assert intersect(prims, 1, origin, x)[0] == pytest.approx(10.0 - np.sqrt(2.0))
    assert intersect(prims, 2, origin, x)[0] == pytest.approx(4.5)
    assert intersect(prims, 3, origin, y)[0] == pytest.approx(6.0)
    assert np.isinf(intersect(prims, 0, origin, -x)[0])  # behind the ray
    assert intersect(prims, 2, np.array([5.0, 0.2, 3.0]), down)[0] == pytest.approx(2.0)  # top cap


def _small_scene() -> Scene:
    full = generate_scene(3, SceneConfig(x_min=-30.0, x_max=30.0))
    p = full.primitives
    keep = np.flatnonzero(np.linalg.norm(p.center[:, :2] - [0.0, -1.75], axis=1) < 25.0)[::4]
    return Scene(p.subset(keep), full.plan, full.x_range)


@pytest.mark.parametrize("pitch, roll", [(0.0, 0.0), (-0.05, 0.04)])
def test_culling_never_loses_a_hit(pitch, roll):
    """Casting with the LiDAR's / camera's cover functions equals casting every ray at every primitive,
    also for a LiDAR tilted by ~3 and ~2 degrees (on a slope, or its mount)."""
    scene = _small_scene()
    everything = lambda lo, hi: (slice(None), slice(None))  # noqa: E731
    pose = EgoPose(0.0, -1.75, 1.73, 0.3, pitch, roll)
    dirs = sensor_directions()[:, ::3] @ pose.rotation().T
    cover = SphericalCover(pose, beam_elevations(), sensor_directions().shape[1])
    culled = cast(scene, pose.position, sensor_directions() @ pose.rotation().T, cover, 120.0)
    full = cast(scene, pose.position, dirs, everything, 120.0)
    np.testing.assert_array_equal(culled.primitive[:, ::3], full.primitive)

    centre, cam_dirs = camera_rays_lidar_frame()
    cam_dirs = cam_dirs[::4, ::4] @ pose.rotation().T
    origin = pose.rotation() @ centre + pose.position
    world_to_pixel = projection_matrix(KITTI_P2, KITTI_TR) @ np.linalg.inv(pose.matrix())
    pin = PinholeCover(world_to_pixel, IMAGE_WIDTH, IMAGE_HEIGHT)
    all_dirs = camera_rays_lidar_frame()[1] @ pose.rotation().T
    culled = cast(scene, origin, all_dirs, pin, 300.0)
    full = cast(scene, origin, cam_dirs, everything, 300.0)
    np.testing.assert_array_equal(culled.primitive[::4, ::4], full.primitive)


def test_cli_writes_a_semantickitti_folder(tmp_path: Path, capsys):
    out = tmp_path / "seq"
    assert train_main(["synth", "--frames", "2", "--seed", "1", "--no-progress", str(out)]) == 0
    assert "wrote 2 frames" in capsys.readouterr().out
    assert sorted(p.name for p in out.iterdir()) == ["calib.txt", "image_2", "labels", "poses.txt", "times.txt",
                                                     "velodyne"]
    reference = SyntheticSequence(frames=2, seed=1)
    for i in range(2):
        points = np.fromfile(out / "velodyne" / f"{i:06d}.bin", np.float32).reshape(-1, 4)
        labels = np.fromfile(out / "labels" / f"{i:06d}.label", np.uint32)
        assert 100_000 <= points.shape[0] <= 130_000 and labels.shape == (points.shape[0],)
        assert ((labels & 0xFFFF) > 0).all()
        with Image.open(out / "image_2" / f"{i:06d}.png") as image:
            assert image.size == (IMAGE_WIDTH, IMAGE_HEIGHT) and image.mode == "RGB"
            pixels = np.asarray(image)
        if i == 1:  # the files hold exactly the in-memory frame
            frame = reference.frame(1)
            np.testing.assert_array_equal(points[:, :3], frame.scan.xyz)
            np.testing.assert_array_equal(points[:, 3], frame.scan.intensity)
            np.testing.assert_array_equal(labels, frame.scan.label)
            np.testing.assert_array_equal(pixels, frame.camera.image)
    calib = dict(line.split(":", 1) for line in (out / "calib.txt").read_text().splitlines())
    assert sorted(calib) == ["P0", "P1", "P2", "P3", "Tr"]
    assert all(len(v.split()) == 12 for v in calib.values())
    poses = np.loadtxt(out / "poses.txt")
    assert poses.shape == (2, 12)
    np.testing.assert_allclose(poses[1], reference.camera_poses()[1].reshape(-1), rtol=1e-8, atol=1e-9)
    np.testing.assert_allclose(np.loadtxt(out / "times.txt"), [0.0, 0.1])
    assert [p.name for p in tmp_path.iterdir()] == ["seq"]  # no temporary folder left behind

    with pytest.raises(SystemExit, match="refusing to overwrite"):
        train_main(["synth", "--frames", "1", "--no-progress", str(out)])
    np.testing.assert_array_equal(np.fromfile(out / "labels" / "000001.label", np.uint32), labels)


def test_writer_accepts_an_empty_folder_and_cleans_up_on_error(tmp_path: Path, monkeypatch):
    def broken(folder, frame, name, dense_labels=False):
        raise RuntimeError("disk full")

    out = tmp_path / "empty"
    out.mkdir()
    monkeypatch.setattr(sequence_module, "write_frame", broken)
    with pytest.raises(RuntimeError, match="disk full"):
        generate_sequence(out, frames=1, seed=0, progress=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty"] and not any(out.iterdir())
    with pytest.raises(ValueError, match="frames"):
        generate_sequence(tmp_path / "none", frames=0)
    not_a_folder = tmp_path / "file"
    not_a_folder.write_text("x")
    with pytest.raises(FileExistsError, match="file"):
        generate_sequence(not_a_folder, frames=1)


# --- the KITTI-like world: sloping ground, kerbs, street plans, porous vegetation, cars, class mix -----------


def _road_plane(xyz: np.ndarray, train: np.ndarray) -> tuple[float, float]:
    """(pitch, roll) in degrees of the least-squares plane through the road points 3-10 m away."""
    r = np.linalg.norm(xyz[:, :2], axis=1)
    near = (train == CLASS_ID["road"]) & (r > 3.0) & (r < 10.0)
    coef = np.linalg.lstsq(np.c_[np.ones(int(near.sum())), xyz[near, :2]], xyz[near, 2], rcond=None)[0]
    return float(np.degrees(np.arctan(coef[1]))), float(np.degrees(np.arctan(coef[2])))


def test_the_ground_is_not_flat(first, last, sequence):
    """The road climbs and falls along the drive, the LiDAR sits tilted like KITTI's (the road rises ahead
    and falls to the left in the sensor frame), and road heights spread with range as on real scans."""
    heights = [float(sequence.scene.ground.height(x, 0.0)) for x in np.linspace(-100.0, 250.0, 36)]
    assert max(heights) - min(heights) > 0.5
    for frame in (first, last):
        xyz, train = frame.scan.xyz, to_training_ids(frame.scan.label)
        pitch, roll = _road_plane(xyz, train)
        assert -0.5 < pitch < 3.5 and -5.0 < roll < 1.5, (pitch, roll)
    spread = []
    for seed in (0, 1, 2):
        s = SyntheticSequence(frames=1, seed=seed)
        f = s.frame(0).scan
        train = to_training_ids(f.label)
        r = np.linalg.norm(f.xyz[:, :2], axis=1)
        road = f.xyz[(train == CLASS_ID["road"]) & (r > 10.0) & (r < 20.0), 2]
        spread.append(np.percentile(road, 95) - np.percentile(road, 5))
    assert np.mean(spread) > 0.3, spread  # real scans: 0.8-0.95 m; a flat plane: ~0.05 m


def test_kerbs_terrain_levels_and_roughness(first):
    """Sidewalks stand a kerb above the road; terrain is rough, paving and asphalt nearly smooth."""
    plan = SyntheticSequence(frames=1, seed=SEED).scene.plan
    for sign, side in plan.sides.items():
        assert 0.04 <= side.kerb <= 0.16
        u = plan.u_edges(sign)
        walk = plan.ground.zone(20.0, sign * (u["sidewalk"] - 0.3))
        assert walk.raw == RAW["sidewalk"] and walk.offset == pytest.approx(side.kerb)
    # the kerb is a step in the scan too: sidewalk points sit above the road points next to them
    xyz, train = first.scan.xyz, to_training_ids(first.scan.label)
    r = np.linalg.norm(xyz[:, :2], axis=1)
    near = r < 12.0
    road_z = np.median(xyz[near & (train == CLASS_ID["road"]), 2])
    walk_z = np.median(xyz[near & (train == CLASS_ID["sidewalk"]), 2])
    assert walk_z > road_z
    x, y = np.meshgrid(np.linspace(0.0, 20.0, 200), np.linspace(0.0, 20.0, 200))
    grass = roughness(np.full(x.size, int(Material.GRASS)), x.ravel(), y.ravel())
    asphalt = roughness(np.full(x.size, int(Material.ASPHALT)), x.ravel(), y.ravel())
    assert grass.std() > 0.01 > 0.002 > asphalt.std()
    # fields beyond the sidewalks follow embankments: in some streets they fall well below the road
    fields = [generate_scene(seed, SceneConfig(x_min=-20.0, x_max=20.0)).ground.height(0.0, 40.0) for seed in range(6)]
    assert min(fields) < -0.5 and max(fields) > 0.1  # down and up embankments


def test_street_plans_vary_and_have_junctions():
    plans = [generate_scene(seed, SceneConfig(x_min=-60.0, x_max=160.0)).plan for seed in range(6)]
    widths = [p.road_half_width for p in plans]
    assert max(widths) - min(widths) > 0.5
    kinds = {len(j.signs) for p in plans for j in p.junctions}
    assert kinds == {1, 2}  # T and X junctions
    for p in plans:
        assert p.junctions, "every 220 m of street has a cross street"
        j = p.junctions[0]
        sign = j.signs[0]
        zone = p.ground.zone(j.x, sign * (p.road_half_width + 15.0))
        assert zone.raw == RAW["road"]  # the cross street runs off the main street
        frontages = {s.frontage for s in p.segments}
        assert len(frontages) >= 2


def _porous_scene(radius: float) -> Scene:
    b = PrimitiveBuilder()
    b.ellipsoid((10.0, 0.0, 0.0), (radius, radius, radius), 0.0, RAW["vegetation"], 0, Material.FOLIAGE)
    b.box((30.0, 0.0, 0.0), (0.5, 20.0, 20.0), 0.0, RAW["building"], 0, Material.FACADE)
    return Scene(b.build(), None, (0.0, 40.0))  # type: ignore[arg-type]


def test_vegetation_is_porous():
    """LiDAR returns come from inside foliage (a few to tens of cm deep); some beams pass through its gaps,
    and the camera sees the same gaps, so projected labels still agree with the image."""
    scene = _porous_scene(2.0)
    az, el = np.meshgrid(np.linspace(-0.15, 0.15, 120), np.linspace(-0.15, 0.15, 120))
    dirs = np.stack([np.cos(el) * np.cos(az), np.cos(el) * np.sin(az), np.sin(el)], axis=-1)
    everything = lambda lo, hi: (slice(None), slice(None))  # noqa: E731
    origin = np.zeros(3)
    lidar = cast(scene, origin, dirs, everything, 100.0, penetration_seed=5)
    camera = cast(scene, origin, dirs, everything, 100.0)
    surface = intersect(scene.primitives, 0, origin, dirs.reshape(-1, 3)).reshape(dirs.shape[:2])
    on_bush = np.isfinite(surface)
    assert on_bush.sum() > 1000
    leaf = on_bush & (lidar.primitive == 0)
    depth = lidar.t[leaf] - surface[leaf]
    assert (depth >= 0).all() and 0.05 < np.median(depth) < 0.3 and np.percentile(depth, 95) > 0.2
    through = np.mean(lidar.primitive[on_bush] == 1)
    assert 0.05 < through < 0.3  # gaps and thin crown edges
    np.testing.assert_array_equal(camera.t[camera.primitive == 0], surface[camera.primitive == 0])
    gaps = on_bush & (camera.primitive == 1)
    assert np.mean(lidar.primitive[gaps] == 1) == 1.0  # where the camera sees through, the LiDAR does too
    again = cast(scene, origin, dirs, everything, 100.0, penetration_seed=5)
    np.testing.assert_array_equal(again.t, lidar.t)


def test_cars_are_kitti_sized_and_shaped():
    rng = np.random.default_rng(0)
    shapes = [random_car(rng) for _ in range(300)]
    length = np.array([s.length for s in shapes])
    width = np.array([s.width for s in shapes])
    height = np.array([s.height for s in shapes])
    assert 3.7 <= length.min() and length.max() <= 5.3 and 4.0 < length.mean() < 4.6  # KITTI Car mean ~3.9-4.2
    assert 1.64 <= width.min() and width.max() <= 2.0 and 1.35 <= height.min() and height.max() <= 2.1
    assert len({round(s.height, 1) for s in shapes}) > 5
    b = PrimitiveBuilder()
    for kind, centre, size, yaw, material, _ in car_parts(shapes[0]):
        b.add(kind, centre, size, yaw, RAW["car"], 1, material)
    p = b.build()
    extent = p.aabb_max.max(axis=0) - p.aabb_min.min(axis=0)
    np.testing.assert_allclose(extent, [shapes[0].length, shapes[0].width, shapes[0].height], atol=0.05)
    assert (p.material == Material.CABIN).sum() == 1 and (p.material == Material.TYRE).sum() == 4
    assert p.aabb_min[:, 2].min() == pytest.approx(0.0, abs=1e-6)  # the wheels touch the ground
    body = p.material != Material.TYRE
    assert p.aabb_min[body, 2].min() > 0.25  # and the ground under the car shows between them


def test_class_mix_and_range_are_kitti_like(first, last):
    """Loose bounds around the real scans (benchmarks/synthetic_realism.py has the figures)."""
    train = np.concatenate([to_training_ids(f.scan.label) for f in (first, last)])
    r = np.concatenate([np.linalg.norm(f.scan.xyz[:, :2], axis=1) for f in (first, last)])
    share = {name: 100.0 * np.mean(train == CLASS_ID[name]) for name in CLASS_NAMES[1:]}
    assert share["vegetation"] + share["terrain"] > 20.0  # real: 47-55 %, the pilot's world: 12 %
    assert share["car"] < 8.0 and share["truck"] < 3.0 and share["parking"] < 4.0 and share["fence"] < 4.0
    assert 10.0 < share["road"] < 40.0 and share["sidewalk"] > 5.0
    assert 7.0 < np.median(r) < 14.0  # real scans: 7.4-12.1 m
    assert np.mean(r < 5.0) < 0.2  # real: 6-11 % within 5 m (the pilot's world: 23 %)


def test_the_ego_car_hides_the_lowest_beams_front_and_back():
    blocked = ego_occlusion()
    el = np.rad2deg(beam_elevations())
    assert not blocked[el > -16.0].any()
    assert 0.4 < blocked[-1].mean() < 0.55  # real KITTI: the lowest ring loses ~44 % of its points
    az = azimuths()
    assert blocked[-1, np.argmin(np.abs(az))] and not blocked[-1, np.argmin(np.abs(az - np.pi / 2))]


def test_a_spread_drive_with_dense_labels(tmp_path: Path):
    from elite_ros_training.data.semantickitti import SequenceFolder

    out = generate_sequence(tmp_path / "spread", frames=2, seed=5, progress=False, every=3, dense_labels=True)
    times = np.loadtxt(out / "times.txt")
    np.testing.assert_allclose(times, [0.0, 0.3])  # frames 0 and 3 of the 10 Hz drive
    whole = SyntheticSequence(frames=4, seed=5)
    np.testing.assert_array_equal(np.fromfile(out / "labels" / "000001.label", np.uint32), whole.frame(3).scan.label)
    frame = SequenceFolder(out)[1]
    assert frame.pseudo_labels is not None and frame.pseudo_labels.shape == (2, *frame.image.shape[:2])
    np.testing.assert_array_equal(frame.pseudo_labels[0], whole.frame(3).camera.class_map)
