"""A procedural, licence-free KITTI-like world: HDL-64E ray caster, camera renderer, labels."""
