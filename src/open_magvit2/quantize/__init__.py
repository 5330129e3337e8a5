"""Lookup-free quantisation: the quantiser, index/code conversions, token factorisation and entropy terms."""

from open_magvit2.quantize.entropy import (
    EntropyTerms,
    binary_entropy_from_logits,
    codebook_probs,
    dense_entropy_terms,
    entropy_from_probs,
    entropy_terms,
)
from open_magvit2.quantize.lfq import (
    LFQ,
    LFQOutput,
    codes_to_indices,
    factorize_indices,
    indices_to_codes,
    quantize_signs,
    unfactorize_indices,
)

__all__ = [
    "LFQ",
    "EntropyTerms",
    "LFQOutput",
    "binary_entropy_from_logits",
    "codebook_probs",
    "codes_to_indices",
    "dense_entropy_terms",
    "entropy_from_probs",
    "entropy_terms",
    "factorize_indices",
    "indices_to_codes",
    "quantize_signs",
    "unfactorize_indices",
]
