"""quantconf: what post-training quantization does to a language model's confidence.

Pipeline: tasks -> scoring -> predictions -> metrics / compare -> report,
with quantize and outliers beside it.
"""

__version__ = "0.1.0"


class QuantconfError(Exception):
    """A user-facing error: the message names what is wrong and how to fix it."""
