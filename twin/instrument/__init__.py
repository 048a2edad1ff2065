"""The instrument interface and its implementations."""

from twin.instrument.protocol import Aborted as Aborted
from twin.instrument.protocol import Busy as Busy
from twin.instrument.protocol import Instrument as Instrument
from twin.instrument.protocol import InstrumentError as InstrumentError
from twin.instrument.protocol import Refused as Refused
