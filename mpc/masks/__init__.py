"""Masks mode: single-aggregator secure aggregation with dropout recovery and distributed DP.

SecAgg+ (Bell et al. 2020) with the consistency round of Bonawitz et al. 2017:
`client` and `server` are the two roles' state machines, `messages` their
canonical byte encodings, `channel` the pairwise keys and masks, `graph` the
neighbour graph, `noise` the per-client DP calibration, `params`/`plan` the
task block and what a round derives from it, and `mode` the functions the
collection path calls.  No I/O anywhere here: see docs/masks.md.
"""
