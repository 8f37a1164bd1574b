"""The transform frame a coder builds on (numpy, no torch): MDCT, band energies and their coding,
and range coding of integers under Laplace distributions whose scales come from integers.

- :mod:`~speechcodec.transform.mdct`: MDCT / inverse MDCT, 20 ms hop, 40 ms sine window.
- :mod:`~speechcodec.transform.bands`: band layouts, band energies, closed-loop quantisation
  and prediction of their levels.
- :mod:`~speechcodec.transform.laplace`: the discretised Laplace tables on a grid of scales, and
  their range coding through constriction.

:class:`speechcodec.baselines.TransformCodec` is the textbook coder made of them.
"""

from speechcodec.transform.mdct import HOP, imdct, mdct, num_frames, odft

__all__ = ["HOP", "imdct", "mdct", "num_frames", "odft"]
