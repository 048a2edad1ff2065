"""STM image formation for Si(100)-2x1:H: Tersoff-Hamann tunnelling, PI feedback on ln I, noise and drift."""

from twin.stm.electrostatics import db_charges as db_charges
from twin.stm.feedback import FeedbackSpec as FeedbackSpec
from twin.stm.feedback import FeedbackState as FeedbackState
from twin.stm.feedback import feedback_init as feedback_init
from twin.stm.feedback import run_loop as run_loop
from twin.stm.noise import StmNoiseSpec as StmNoiseSpec
from twin.stm.noise import creep_ang as creep_ang
from twin.stm.noise import drift_ang as drift_ang
from twin.stm.noise import preamp_noise_pa as preamp_noise_pa
from twin.stm.noise import preamp_rms_pa as preamp_rms_pa
from twin.stm.noise import z_noise_ang as z_noise_ang
from twin.stm.scan import constant_height_image as constant_height_image
from twin.stm.scan import current_at as current_at
from twin.stm.scan import height_for_current as height_for_current
from twin.stm.scan import scan as scan
from twin.stm.scan import scan_grid as scan_grid
from twin.stm.tunnelling import LdosSpec as LdosSpec
from twin.stm.tunnelling import TipSpec as TipSpec
from twin.stm.tunnelling import TunnellingSpec as TunnellingSpec
from twin.stm.tunnelling import kappa as kappa
from twin.stm.tunnelling import tunnelling_current as tunnelling_current
