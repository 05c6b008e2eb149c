"""fetometry: explainable, automated fetal biometry from 2D ultrasound.

Decision support only: every number fetometry reports must be checked by a qualified
clinician. It is not a diagnosis.
"""

__version__ = "0.1.0"

DISCLAIMER = (
    "fetometry is decision support for trained clinicians, not a diagnostic device. "
    "Every measurement must be reviewed by a qualified professional."
)
