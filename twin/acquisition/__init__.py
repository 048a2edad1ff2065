"""Acquisition realism for any ideal STEM signal: dose, detector chains, serial-scan distortions, artifacts.

Order of a simulated acquisition: (1) probe positions with scan distortions (`probe_positions`, or
`distort` for an image), (2) the ideal signal sampled there, (3) `source_blur`, (4) `acquire` = detector
chain + artifacts.
"""

from twin.acquisition.acquire import acquire as acquire
from twin.acquisition.artifacts import ArtifactSpec as ArtifactSpec
from twin.acquisition.artifacts import add_artifacts as add_artifacts
from twin.acquisition.artifacts import source_blur as source_blur
from twin.acquisition.detectors import AbstractDetector as AbstractDetector
from twin.acquisition.detectors import CountingDetector as CountingDetector
from twin.acquisition.detectors import PMTDetector as PMTDetector
from twin.acquisition.detectors import detect as detect
from twin.acquisition.dose import dose_per_area as dose_per_area
from twin.acquisition.dose import electrons_per_pixel as electrons_per_pixel
from twin.acquisition.scan import ScanNoiseSpec as ScanNoiseSpec
from twin.acquisition.scan import distort as distort
from twin.acquisition.scan import magnification_error as magnification_error
from twin.acquisition.scan import pixel_times as pixel_times
from twin.acquisition.scan import probe_offsets as probe_offsets
from twin.acquisition.scan import probe_positions as probe_positions
