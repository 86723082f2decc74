"""Decoding for the seq2seq lip reader: greedy and beam search with fairseq's semantics.

Beam search follows fairseq's SequenceGenerator + BeamSearch: decoding starts from </s>,
<pad> is never chosen, </s> is forbidden before ``min_len`` and forced at
``max_len = min(int(max_len_a * T + max_len_b), max_target_positions - 1)`` (T: padded source
length), 2 x beam candidates per step, a hypothesis is finished when </s> is among the top
``beam`` candidates, finished scores are divided by ``(length + 1) ** lenpen``, and a sentence
stops once it has ``beam`` finished hypotheses.
"""
from typing import List, Optional

import torch
import torch.nn.functional as F

PAD, EOS = 1, 2


def _max_len(decoder, source_len: int, max_len_a: float, max_len_b: int, min_len: int) -> int:
    max_len = min(int(max_len_a * source_len + max_len_b), decoder.cfg.max_target_positions - 1)
    if min_len > max_len:
        raise ValueError(f"min_len {min_len} is larger than max_len {max_len}; adjust max_len_a/max_len_b")
    return max_len


def _step_lprobs(decoder, tokens, enc, enc_mask, caches, step, max_len, min_len, eos):
    logits = decoder(tokens, enc, enc_mask, caches)[:, -1]
    lprobs = F.log_softmax(logits.float(), dim=-1)
    lprobs[lprobs != lprobs] = float("-inf")
    lprobs[:, PAD] = float("-inf")
    if step >= max_len:
        lprobs[:, :eos] = float("-inf")
        lprobs[:, eos + 1:] = float("-inf")
    if step < min_len:
        lprobs[:, eos] = float("-inf")
    return lprobs


def _reorder(caches, index: torch.Tensor) -> None:
    for cache in caches:
        for key in cache:
            cache[key] = cache[key].index_select(0, index)


@torch.no_grad()
def greedy_search(decoder, enc: torch.Tensor, enc_mask: Optional[torch.Tensor], max_len_a: float = 1.0,
                  max_len_b: int = 0, min_len: int = 1, eos: int = EOS) -> List[List[int]]:
    """Arg-max decoding. enc (B, S, C) -> ids per sample without </s>."""
    batch = enc.shape[0]
    max_len = _max_len(decoder, enc.shape[1], max_len_a, max_len_b, min_len)
    caches = [dict() for _ in decoder.layers]
    tokens = torch.full((batch, 1), eos, dtype=torch.long, device=enc.device)
    done = torch.zeros(batch, dtype=torch.bool, device=enc.device)
    for step in range(max_len + 1):
        lprobs = _step_lprobs(decoder, tokens, enc, enc_mask, caches, step, max_len, min_len, eos)
        best = lprobs.argmax(dim=-1)
        best[done] = PAD
        tokens = torch.cat([tokens, best[:, None]], dim=1)
        done |= best.eq(eos)
        if done.all():
            break
    out = []
    for row in tokens[:, 1:].tolist():
        out.append(row[:row.index(eos)] if eos in row else row)
    return out


@torch.no_grad()
def beam_search(decoder, enc: torch.Tensor, enc_mask: Optional[torch.Tensor], beam: int = 5,
                max_len_a: float = 1.0, max_len_b: int = 0, lenpen: float = 1.0, min_len: int = 1,
                eos: int = EOS, nbest: int = 1) -> List:
    """enc (B, S, C), enc_mask (B, S) -> best ids per sample (without </s>); with nbest > 1 a list
    of (score, ids) per sample, best first."""
    batch, source_len = enc.shape[:2]
    max_len = _max_len(decoder, source_len, max_len_a, max_len_b, min_len)
    device = enc.device
    expand = torch.arange(batch, device=device).repeat_interleave(beam)
    enc = enc.index_select(0, expand)
    enc_mask = enc_mask.index_select(0, expand) if enc_mask is not None else None
    caches = [dict() for _ in decoder.layers]
    tokens = torch.full((batch * beam, max_len + 2), PAD, dtype=torch.long, device=device)
    tokens[:, 0] = eos
    scores = torch.zeros(batch * beam, max_len + 1, device=device)
    finalized = [[] for _ in range(batch)]
    finished = [False] * batch
    sentence_of_row = list(range(batch))          # current batch row -> original sentence
    ignore = torch.zeros(batch, beam, dtype=torch.bool, device=device)
    bsz = batch
    for step in range(max_len + 1):
        lprobs = _step_lprobs(decoder, tokens[:, :step + 1], enc, enc_mask, caches, step, max_len, min_len, eos)
        vocab = lprobs.shape[-1]
        lprobs = lprobs.view(bsz, beam, vocab)
        if step == 0:
            lprobs = lprobs[:, :1]
        else:
            lprobs = lprobs + scores.view(bsz, beam, -1)[:, :, step - 1:step]
        flat = lprobs.reshape(bsz, -1)
        cand_scores, cand_flat = torch.topk(flat, k=min(2 * beam, flat.shape[1] - 1))
        if cand_scores.shape[1] < beam:        # tiny vocabularies: fill with dead candidates
            short = beam - cand_scores.shape[1]
            cand_scores = F.pad(cand_scores, (0, short), value=float("-inf"))
            cand_flat = F.pad(cand_flat, (0, short), value=PAD)
        cand_size = cand_scores.shape[1]
        cand_beams, cand_tokens = cand_flat // vocab, cand_flat % vocab
        offsets = (torch.arange(bsz, device=device) * beam)[:, None]
        cand_rows = cand_beams + offsets
        eos_mask = cand_tokens.eq(eos) & cand_scores.ne(float("-inf"))
        eos_mask[:, :beam][ignore] = False

        done_rows = []
        top = eos_mask[:, :beam]
        if top.any():
            for row, score in zip(cand_rows[:, :beam][top].tolist(), cand_scores[:, :beam][top].tolist()):
                sentence = sentence_of_row[row // beam]
                if len(finalized[sentence]) < beam:
                    finalized[sentence].append((score / (step + 1) ** lenpen, tokens[row, 1:step + 1].tolist()))
            for batch_row in sorted({r // beam for r in cand_rows[:, :beam][top].tolist()}):
                sentence = sentence_of_row[batch_row]
                if not finished[sentence] and (len(finalized[sentence]) == beam or step == max_len):
                    finished[sentence] = True
                    done_rows.append(batch_row)
        if all(finished) or step >= max_len:
            break

        if done_rows:
            keep = torch.tensor([r for r in range(bsz) if r not in done_rows], device=device)
            keep_hyps = (keep[:, None] * beam + torch.arange(beam, device=device)).view(-1)
            eos_mask, cand_beams, cand_scores, cand_tokens, ignore = (
                t.index_select(0, keep) for t in (eos_mask, cand_beams, cand_scores, cand_tokens, ignore))
            tokens, scores, enc = (t.index_select(0, keep_hyps) for t in (tokens, scores, enc))
            enc_mask = enc_mask.index_select(0, keep_hyps) if enc_mask is not None else None
            _reorder(caches, keep_hyps)
            sentence_of_row = [sentence_of_row[r] for r in keep.tolist()]
            bsz = len(sentence_of_row)
            cand_rows = cand_beams + (torch.arange(bsz, device=device) * beam)[:, None]

        eos_mask[:, :beam] = ignore | eos_mask[:, :beam]
        ranking = eos_mask.long() * cand_size + torch.arange(cand_size, device=device)
        ranked, chosen = torch.topk(ranking, k=beam, dim=1, largest=False)
        ignore = ranked.ge(cand_size)
        source_rows = torch.gather(cand_rows, 1, chosen).view(-1)
        tokens[:, :step + 1] = tokens.index_select(0, source_rows)[:, :step + 1]
        tokens.view(bsz, beam, -1)[:, :, step + 1] = torch.gather(cand_tokens, 1, chosen)
        if step > 0:
            scores[:, :step] = scores.index_select(0, source_rows)[:, :step]
        scores.view(bsz, beam, -1)[:, :, step] = torch.gather(cand_scores, 1, chosen)
        _reorder(caches, source_rows)

    results = []
    for hyps in finalized:
        ranked_hyps = sorted(hyps, key=lambda h: h[0], reverse=True)
        results.append(ranked_hyps[:nbest] if nbest > 1 else (ranked_hyps[0][1] if ranked_hyps else []))
    return results
