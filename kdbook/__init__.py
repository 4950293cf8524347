"""kdbook: the helper package of a hands-on knowledge distillation workbook.

Importing it changes no global state; the notebooks import the modules they need,
e.g. ``from kdbook.losses import kd_loss``.
"""

__version__ = "0.1.0"
