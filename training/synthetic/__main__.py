"""`python -m elite_ros_training.synthetic OUT --frames N --seed S` = `elite-ros-train synth ...`."""
from __future__ import annotations

import sys

from ..cli import main

if __name__ == "__main__":
    sys.exit(main(["synth", *sys.argv[1:]]))
