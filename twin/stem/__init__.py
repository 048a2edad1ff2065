"""STEM image formation: probe, multislice, detectors, scans."""

from potentials.projected import PotentialSpec as PotentialSpec
from twin.stem.detectors import AnnularDetector as AnnularDetector
from twin.stem.probe import ProbeSpec as ProbeSpec
from twin.stem.scan import GridScan as GridScan
from twin.stem.simulate import simulate as simulate
