"""Named samples for the virtual instruments and the data generator."""

from twin.samples.bi_si import bi_si110 as bi_si110
from twin.samples.builders import SAMPLES as SAMPLES
from twin.samples.builders import graphene_si as graphene_si
from twin.samples.builders import mos2 as mos2
from twin.samples.builders import named_sample as named_sample
from twin.samples.builders import srtio3 as srtio3
from twin.samples.si100_h import HSurface as HSurface
from twin.samples.si100_h import si100_h as si100_h
from twin.samples.families import LabelledSample as LabelledSample
from twin.samples.families import make_sample as make_sample
