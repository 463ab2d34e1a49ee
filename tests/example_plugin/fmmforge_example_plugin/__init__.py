"""An example fmmforge plugin: a reward that prefers sparse schemes (fewer nonzeros)."""

from fmmforge.plugins import RewardResult, hookimpl


class NnzReward:
    name = "nnz"
    description = "minus the nonzero coefficients in U, V and W"
    cheap = True  # pure arithmetic: fine at every search step

    def score(self, decomposition, context):
        u, v, w = decomposition.nnz
        return RewardResult(-(u + v + w), {"nnz U": u, "nnz V": v, "nnz W": w})


@hookimpl
def register_rewards(register):
    register(NnzReward())
