"""Stage-1 loss terms of the SpotDiff encoder, each a plain function of feature tensors.

Features arrive per group as (B, 3, D), views in ``sample.VIEWS`` order: ``anchor`` (pose P0,
background B0), ``bg`` (P0, B1), ``pose`` (P1, B0). The group structure is the supervision:

- pose expert: anchor and bg agree (same pose), the pose view differs (``expert_triplet``);
- background expert: anchor and pose agree (same background), the bg view differs;
- subject head: all views of a subject agree, other subjects differ (``subject_contrastive``);
- every image's subject, pose and background features are mutually orthogonal (``orthogonality``);
- the subject feature's mean is the same for every yaw bin and every background kind
  (``factor_invariance``, labels from ``spotdiff.common.factors``).

All terms compare directions (cosines), so feature norms are free.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

ANCHOR, BG, POSE = 0, 1, 2  # view indices, as in sample.VIEWS


def orthogonality(*features: torch.Tensor) -> torch.Tensor:
    """Mean squared cosine over every pair of ``features`` (each (N, D), rows paired), averaged over
    pairs and rows. 0 when all pairs are orthogonal, 1 when all are (anti-)parallel. Squared, not
    absolute: smooth at 0, so the gradient vanishes as the constraint is met instead of chattering."""
    if len(features) < 2:
        raise ValueError("orthogonality needs at least two feature sets")
    unit = [F.normalize(f, dim=-1) for f in features]
    terms = [((unit[i] * unit[j]).sum(-1) ** 2).mean()
             for i in range(len(unit)) for j in range(i + 1, len(unit))]
    return torch.stack(terms).mean()


def expert_triplet(same_a: torch.Tensor, same_b: torch.Tensor, changed: torch.Tensor, margin: float) -> torch.Tensor:
    """Hinge loss that ``same_a`` and ``same_b`` (two views sharing the factor) are more similar, by
    ``margin`` in cosine, than either is to ``changed`` (the view where the factor changed). Shapes
    (B, D); returns the mean over groups and both directions. 0 once every group is separated."""
    a, b, c = (F.normalize(t, dim=-1) for t in (same_a, same_b, changed))
    pos = (a * b).sum(-1)
    return 0.5 * (F.relu(margin - pos + (a * c).sum(-1)) + F.relu(margin - pos + (b * c).sum(-1))).mean()


def subject_contrastive(subject: torch.Tensor, labels: torch.Tensor, temperature: float,
                        shared_background_positives: bool = False) -> torch.Tensor:
    """Supervised contrastive loss (SupCon) over every view in the batch.

    ``subject`` (B, V, D) and ``labels`` (B,) integer subject ids (groups of one subject share an id).
    For each image, the other images with its label are positives, every other image a negative;
    the loss is the mean over images of -mean_p log softmax(cos / temperature)_p.
    """
    b, v, d = subject.shape
    z = F.normalize(subject.reshape(b * v, d), dim=-1)
    lab = labels.repeat_interleave(v)
    logits = z @ z.T / temperature
    self_mask = torch.eye(b * v, dtype=torch.bool, device=z.device)
    logits = logits.masked_fill(self_mask, float("-inf"))
    # log_softmax, not logits - logsumexp: the same value, but torch sends a tensor's exp and log to MKL's
    # vector math, which takes other code on AMD than on Intel CPUs whatever MKL_CBWR says (issue 14,
    # spotdiff.common.determinism), while log_softmax is torch's own kernel, pinned with ATen's.
    log_prob = torch.log_softmax(logits, dim=1)
    pos = (lab[:, None] == lab[None, :]) & ~self_mask
    if not shared_background_positives:
        # anchor and pose views of one group share background B0: as a positive pair they reward a
        # subject feature that sees the background for encoding it (the shortcut the method must
        # avoid). They stay in the softmax denominator; only pairs whose backgrounds differ count as
        # positives. With a subject head on the central window (``train.subject_window``) the pair is
        # kept (``train.shared_background_positives``): it is the strongest pose-invariance signal.
        view = torch.arange(v, device=z.device).repeat(b)
        same_group = torch.arange(b, device=z.device).repeat_interleave(v)
        shares_bg = (same_group[:, None] == same_group[None, :]) & (
            ((view[:, None] == ANCHOR) & (view[None, :] == POSE)) | ((view[:, None] == POSE) & (view[None, :] == ANCHOR)))
        pos = pos & ~shares_bg
    # Every image has >= V-1 positives (its own group's other views), so no division by zero.
    return -(log_prob.masked_fill(~pos, 0.0).sum(1) / pos.sum(1)).mean()


def factor_invariance(features: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Share of the variance of unit-length ``features`` explained by the class means of ``labels``
    (between-class over total variance, 0..1): 0 when every class has the same mean feature, 1 when
    each class collapses onto its own point.

    ``features`` (N, D), ``labels`` (N,) integer classes; rows labelled -1 (no label) are left out.
    0 when fewer than two classes or two rows remain. A linear read-out of the label from the features
    rests on the class means differing, which is what this measures; unlike an adversary (tried:
    gradient reversal made the yaw-probe leakage worse), it has no second player that can be fooled.
    """
    keep = labels >= 0
    z, y = F.normalize(features[keep], dim=-1), labels[keep]
    classes, inverse, counts = torch.unique(y, return_inverse=True, return_counts=True)
    if len(classes) < 2 or len(z) < 2:
        return features.sum() * 0.0  # keeps the graph (and device) for a weighted sum
    centred = z - z.mean(0)
    total = centred.pow(2).sum(1).mean().clamp_min(1e-8)
    sums = torch.zeros(len(classes), z.shape[1], dtype=z.dtype, device=z.device).index_add_(0, inverse, centred)
    between = (sums.pow(2).sum(1) / counts).sum() / len(z)  # sum_k n_k/n |mean_k - mean|^2
    return between / total


def stage1_losses(out: dict[str, torch.Tensor], labels: torch.Tensor, *, margin: float, temperature: float,
                  weights: dict[str, float], shared_background_positives: bool = False,
                  factors: dict[str, torch.Tensor] | None = None) -> dict[str, torch.Tensor]:
    """Every stage-1 term plus their weighted sum ``total``.

    ``out``: the encoder's ``subject``/``pose``/``background`` features reshaped to (B, 3, D);
    ``labels``: (B,) subject ids; ``weights``: multiplier per term name (``subject``, ``pose``,
    ``background``, ``orthogonality``, ``invariance``); ``shared_background_positives``: see
    ``subject_contrastive`` (``train.shared_background_positives``); ``factors``: (B, 3) class ids per
    view, -1 = none, for ``factor_invariance`` (``invariance`` is its sum over the factors given; 0 when
    None).
    """
    s, p, g = out["subject"], out["pose"], out["background"]
    d = s.shape[-1]
    # Experts are compared after removing their batch mean: every image's expert feature starts out
    # sharing one large common direction (backbone features of all images are alike), so all cosines
    # sit near 1, the hinge sits at its flat "collapsed" value (= margin) and the pose expert never
    # leaves it. Centred, only what differs between images is compared.
    pc, gc = p - p.mean(dim=(0, 1), keepdim=True), g - g.mean(dim=(0, 1), keepdim=True)
    terms = {
        "subject": subject_contrastive(s, labels, temperature, shared_background_positives),
        "pose": expert_triplet(pc[:, ANCHOR], pc[:, BG], pc[:, POSE], margin),
        "background": expert_triplet(gc[:, ANCHOR], gc[:, POSE], gc[:, BG], margin),
        "orthogonality": orthogonality(s.reshape(-1, d), p.reshape(-1, d), g.reshape(-1, d)),
    }
    flat = s.reshape(-1, d)
    inv = [factor_invariance(flat, y.reshape(-1)) for y in (factors or {}).values()]
    terms["invariance"] = torch.stack(inv).sum() if inv else flat.sum() * 0.0
    terms["total"] = sum(weights.get(k, 0.0) * v for k, v in terms.items())
    return terms
