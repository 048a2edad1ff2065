"""The instrument interface and its implementations.

Instrument (the protocol), VirtualSTEM and VirtualSTM (the simulated microscopes), SafeInstrument +
Limits (interlocks around any instrument), record / replay (sessions on disk), connect (a remote instrument
served by `twin serve`). The Gymnasium environments register on `import twin.instrument.gym`.
"""

from twin.instrument.protocol import Aborted as Aborted
from twin.instrument.protocol import Busy as Busy
from twin.instrument.protocol import Instrument as Instrument
from twin.instrument.protocol import InstrumentError as InstrumentError
from twin.instrument.protocol import Refused as Refused
from twin.instrument.recorder import record as record
from twin.instrument.recorder import replay as replay
from twin.instrument.remote import connect as connect
from twin.instrument.safety import Limits as Limits
from twin.instrument.safety import SafeInstrument as SafeInstrument
from twin.instrument.virtual_stem import VirtualSTEM as VirtualSTEM
from twin.instrument.virtual_stm import VirtualSTM as VirtualSTM
