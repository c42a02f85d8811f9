"""ptp: Parallel Token Prediction. Several tokens per forward call, exactly the teacher's distribution."""

from ptp.decoding import DecodeConfig, GenerateOutput, generate, generate_stream
from ptp.model import PTPConfig, PTPModel
from ptp.sampling import SamplingConfig

__all__ = [
    "DecodeConfig",
    "GenerateOutput",
    "PTPConfig",
    "PTPModel",
    "SamplingConfig",
    "generate",
    "generate_stream",
]
__version__ = "0.1.0"
