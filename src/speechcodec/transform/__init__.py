"""The transform frame a coder builds on (numpy, no torch): MDCT, band energies and their coding,
and range coding of integers under Laplace distributions whose scales come from integers.

- :mod:`~speechcodec.transform.mdct`: MDCT / inverse MDCT, 20 ms hop, 40 ms sine window.
- :mod:`~speechcodec.transform.bands`: band layouts, band energies, closed-loop quantisation
  and prediction of their levels.
- :mod:`~speechcodec.transform.laplace`: the discretised Laplace tables on a grid of scales, and
  their range coding (through :mod:`speechcodec.bitstream.rangecoder`, every family's coder).
- :mod:`~speechcodec.transform.quantiser`: each coefficient over its band's RMS**alpha and one
  step, its Laplace grid index, dequantisation with noise fill.
- :mod:`~speechcodec.transform.payload`: analysis of a run of frames, and its range-coded payload
  (energies, then coefficients) at one step, and back.

:class:`speechcodec.baselines.TransformCodec` is the textbook coder made of them (its own file
format and rate control); the perceptual family's packets (:mod:`speechcodec.perceptual.packets`)
code the same frames one at a time.
"""

from speechcodec.transform.mdct import HOP, imdct, mdct, num_frames, odft

__all__ = ["HOP", "imdct", "mdct", "num_frames", "odft"]
