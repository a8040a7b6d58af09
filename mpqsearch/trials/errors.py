"""Why a trial failed: drivers record the message, the command line prints it (torch-free)."""


class TrialError(RuntimeError):
    """A trial that cannot give a true result; drivers record it as failed with this message."""


class QuantizationError(TrialError):
    """Applying the policy to the model failed."""


class MetricError(TrialError):
    """The metric came out NaN or infinite."""
