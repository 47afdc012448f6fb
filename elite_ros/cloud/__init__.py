"""sensor_msgs/PointCloud2 <-> numpy for any field layout, and the segmentation output clouds.

Three modules, one job each, with the public names importable from here (``from elite_ros.cloud import ...``):

- `elite_ros.cloud.layout`: PointField datatypes and message layouts, validated and laid over the data buffer;
- `elite_ros.cloud.decoding`: a cloud's finite points as a `Scan` (`decode`), all its fields (`read_points`);
- `elite_ros.cloud.building`: new clouds (`make_cloud`) and the outputs (`with_labels`, `visualization_cloud`,
  `filter_cloud`).
"""
from elite_ros.cloud.building import (
    CLASS_ID_FIELD,
    LABEL_FIELD,
    LABEL_FORMATS,
    PROBABILITY_FIELD,
    RGB_FIELD,
    filter_cloud,
    make_cloud,
    visualization_cloud,
    with_labels,
)
from elite_ros.cloud.decoding import DEFAULT_INTENSITY_FIELDS, Scan, decode, read_points, scan_from_arrays
from elite_ros.cloud.layout import (
    DATATYPE_DTYPES,
    DATATYPE_NAMES,
    FLOAT32,
    FLOAT64,
    INT8,
    INT16,
    INT32,
    POINTCLOUD2_TYPE,
    UINT8,
    UINT16,
    UINT32,
    CloudFormatError,
)

__all__ = [
    "CLASS_ID_FIELD", "DATATYPE_DTYPES", "DATATYPE_NAMES", "DEFAULT_INTENSITY_FIELDS", "FLOAT32", "FLOAT64", "INT8",
    "INT16", "INT32", "LABEL_FIELD", "LABEL_FORMATS", "POINTCLOUD2_TYPE", "PROBABILITY_FIELD", "RGB_FIELD", "UINT8",
    "UINT16", "UINT32", "CloudFormatError", "Scan", "decode", "filter_cloud", "make_cloud", "read_points",
    "scan_from_arrays", "visualization_cloud", "with_labels",
]
