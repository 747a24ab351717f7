"""Parameter-free tokenizers: patchify(x) -> Patches and unpatchify(Patches) -> x, exact inverses."""
if __name__ == "tokenizers":  # pragma: no cover - guards against shadowing Hugging Face's package
    raise ImportError(
        "omnimae's tokenizers folder was imported as top-level 'tokenizers', which would shadow "
        "Hugging Face's 'tokenizers'. Install omnimae (pip install -e .) and import omnimae.tokenizers."
    )

from .channel2d import ChannelPatchTokenizer
from .patch2d import PatchTokenizer2D
from .tube import TubeTokenizer

__all__ = ["ChannelPatchTokenizer", "PatchTokenizer2D", "TubeTokenizer"]
