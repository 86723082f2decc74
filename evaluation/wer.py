"""Word and character error rates over a corpus, with jiwer."""
from typing import Dict, Sequence

import jiwer


def error_rates(references: Sequence[str], hypotheses: Sequence[str]) -> Dict[str, float]:
    """Corpus-level WER and CER (edits / reference length), upper-cased, whitespace-normalised."""
    if len(references) != len(hypotheses):
        raise ValueError(f"{len(references)} references but {len(hypotheses)} hypotheses")
    norm = lambda s: " ".join(s.upper().split())
    refs = [norm(r) for r in references]
    hyps = [norm(h) for h in hypotheses]
    return {"wer": jiwer.wer(refs, hyps), "cer": jiwer.cer(refs, hyps)}
