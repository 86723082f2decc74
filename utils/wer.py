"""Word and character error rates over a corpus, with jiwer."""
from typing import Dict, Sequence

import jiwer


def normalise(text: str) -> str:
    """The form transcripts and lip-reading hypotheses are compared in: upper case, single spaces."""
    return " ".join(text.upper().split())


def error_rates(references: Sequence[str], hypotheses: Sequence[str]) -> Dict[str, float]:
    """Corpus-level WER and CER (edits / reference length) of normalised texts."""
    if len(references) != len(hypotheses):
        raise ValueError(f"{len(references)} references but {len(hypotheses)} hypotheses")
    refs = [normalise(r) for r in references]
    hyps = [normalise(h) for h in hypotheses]
    return {"wer": jiwer.wer(refs, hyps), "cer": jiwer.cer(refs, hyps)}
