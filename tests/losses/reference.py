"""Float64 loop references written straight from the formulas: AMCL as docs/amcl.md gives it, MoCHi (Kalantidis
et al. 2020) and ASCL (Feng & Patras 2022) as their papers do.

Deliberately naive: loops over heads, anchors and negatives, one vector at a time, phi evaluated on each pair's
two vectors separately (no factorisation, no batching), so they share no code path with the library.
phi is given as its four parameters (W1 (H, D), b1, W2 (D, H), b2), nn.Linear layout.
"""
from __future__ import annotations

import math

import torch


def unit(x):
    return x / torch.sqrt((x * x).sum())


def cos(x, y):
    return (x * y).sum() / torch.sqrt((x * x).sum() * (y * y).sum())


def phi(params, x):
    w1, b1, w2, b2 = params
    return w2 @ torch.relu(w1 @ x + b1) + b2


def tau(params, u, v, tau_min, tau_max):
    return tau_min + (tau_max - tau_min) * torch.sigmoid(-(phi(params, u) * phi(params, v)).sum())


def omega(t, dim):
    return dim / 2 * torch.log(t) + 1 / t


def _anchor_loss(params, anchor, positive, negatives, topk, beta, tau_min, tau_max, dim):
    """l(i) of the `ref` form (docs/amcl.md) for one anchor, its positive and its candidate negatives."""
    s_pos = (anchor * positive).sum()
    t_pos = tau(params, anchor, positive, tau_min, tau_max)
    order = sorted(range(len(negatives)), key=lambda j: float((anchor * negatives[j]).sum().detach()), reverse=True)
    chosen = [negatives[j] for j in order[:min(topk, len(negatives))]]
    mean_term = 0.0
    reg = 0.0
    for n in chosen:
        t_n = tau(params, anchor, n, tau_min, tau_max)
        mean_term = mean_term + (anchor * n).sum() / t_n
        reg = reg + torch.log(t_n) + 1 / t_n
    mean_term = mean_term / len(chosen)
    return -s_pos / t_pos + mean_term + beta * omega(t_pos, dim) - beta * reg


def amcl_simclr(za, zb, params, beta, topk, tau_min, tau_max):
    C, B, D = za.shape
    total = 0.0
    for c in range(C):
        views = [unit(za[c, i]) for i in range(B)] + [unit(zb[c, i]) for i in range(B)]
        head = 0.0
        for i in range(2 * B):
            p = (i + B) % (2 * B)
            negatives = [views[j] for j in range(2 * B) if j not in (i, p)]
            head = head + _anchor_loss(params, views[i], views[p], negatives, topk, beta, tau_min, tau_max, D)
        total = total + head / (2 * B)
    return total


def amcl_moco(za, zb, queue, params, beta, topk, tau_min, tau_max, keys=None, extra=None):
    """Anchors [za; zb]; positives [zb; za] or, with keys=(ka, kb), [kb; ka]; negatives: the head's queue plus
    extra[c, i] (anchor i's own negatives)."""
    C, B, D = za.shape
    total = 0.0
    for c in range(C):
        head = 0.0
        for i in range(2 * B):
            anchor = unit(za[c, i]) if i < B else unit(zb[c, i - B])
            if keys is None:
                positive = unit(zb[c, i]) if i < B else unit(za[c, i - B])
            else:
                positive = unit(keys[1][c, i].detach()) if i < B else unit(keys[0][c, i - B].detach())
            negatives = [unit(queue[c, j].detach()) for j in range(queue.shape[1])]
            if extra is not None:
                negatives += [unit(extra[c, i, s].detach()) for s in range(extra.shape[2])]
            head = head + _anchor_loss(params, anchor, positive, negatives, topk, beta, tau_min, tau_max, D)
        total = total + head / (2 * B)
    return total


def amcl_simsiam(pa, pb, za, zb, params, beta, tau_min, tau_max):
    C, B, D = pa.shape
    total = 0.0
    for c in range(C):
        head = 0.0
        for b in range(B):
            p1, p2 = unit(pa[c, b]), unit(pb[c, b])
            z1, z2 = unit(za[c, b].detach()), unit(zb[c, b].detach())
            s1, s2 = (p1 * z2).sum(), (p2 * z1).sum()
            t1, t2 = tau(params, p1, z2, tau_min, tau_max), tau(params, p2, z1, tau_min, tau_max)
            head = head - 0.5 * s1 / t1 - 0.5 * s2 / t2 + beta * omega(t1, D) + beta * omega(t2, D)
        total = total + head / B
    return total


def _standardise(col):
    n = col.shape[0]
    mean = sum(col[b] for b in range(n)) / n
    var = sum((col[b] - mean) ** 2 for b in range(n)) / (n - 1)
    return [(col[b] - mean) / torch.sqrt(var) for b in range(n)]


def _cross_correlation(x, y):
    B, D = x.shape
    xs = [_standardise(x[:, l]) for l in range(D)]
    ys = [_standardise(y[:, m]) for m in range(D)]
    return [[sum(xs[l][b] * ys[m][b] for b in range(B)) / B for m in range(D)] for l in range(D)]


def amcl_barlow(za, zb, params, beta, lambd, tau_min, tau_max):
    C, B, D = za.shape
    total = 0.0
    for c in range(C):
        cc = _cross_correlation(za[c], zb[c])
        for l in range(D):
            for m in range(D):
                t = tau(params, za[c][:, l], zb[c][:, m], tau_min, tau_max)
                if l == m:
                    total = total + (1 - cc[l][m] / t) ** 2 + beta * omega(t, D)
                else:
                    total = total + lambd * cc[l][m] ** 2 / t - beta * omega(t, D)
    return total


# ---- baselines ------------------------------------------------------------------------------------------------

def nt_xent(za, zb, temperature):
    C, B, D = za.shape
    total = 0.0
    for c in range(C):
        views = [unit(za[c, i]) for i in range(B)] + [unit(zb[c, i]) for i in range(B)]
        head = 0.0
        for i in range(2 * B):
            p = (i + B) % (2 * B)
            denom = sum(torch.exp((views[i] * views[j]).sum() / temperature) for j in range(2 * B) if j != i)
            head = head - torch.log(torch.exp((views[i] * views[p]).sum() / temperature) / denom)
        total = total + head / (2 * B)
    return total


def info_nce(q, k, queue, temperature, extra=None):
    C, B, D = q.shape
    total = 0.0
    for c in range(C):
        head = 0.0
        for b in range(B):
            a = unit(q[c, b])
            pos = torch.exp((a * unit(k[c, b])).sum() / temperature)
            denom = pos + sum(torch.exp((a * unit(queue[c, j])).sum() / temperature) for j in range(queue.shape[1]))
            if extra is not None:
                denom = denom + sum(torch.exp((a * unit(extra[c, b, s])).sum() / temperature)
                                    for s in range(extra.shape[2]))
            head = head - torch.log(pos / denom)
        total = total + head / B
    return total


def negative_cosine(pa, pb, za, zb):
    C, B, D = pa.shape
    return sum(sum(-0.5 * cos(pa[c, b], zb[c, b].detach()) - 0.5 * cos(pb[c, b], za[c, b].detach())
                   for b in range(B)) / B for c in range(C))


def barlow(za, zb, lambd):
    C, B, D = za.shape
    total = 0.0
    for c in range(C):
        cc = _cross_correlation(za[c], zb[c])
        for l in range(D):
            for m in range(D):
                total = total + ((1 - cc[l][m]) ** 2 if l == m else lambd * cc[l][m] ** 2)
    return total


def byol(pa, pb, ta, tb):
    C, B, D = pa.shape
    return sum(sum((2 - 2 * cos(pa[c, b], tb[c, b].detach())) + (2 - 2 * cos(pb[c, b], ta[c, b].detach()))
                   for b in range(B)) / B for c in range(C))


def ascl(q, k, queue, K, t1, t2, variant):
    """ASCL (Feng & Patras 2022) for (C, B, D) stacks, one query at a time."""
    C, B, D = q.shape
    total = 0.0
    for c in range(C):
        negs = [unit(queue[c, j].detach()) for j in range(queue.shape[1])]
        n = len(negs)
        head = 0.0
        for b in range(B):
            key = unit(k[c, b].detach())
            e = [math.exp(float((key * neg).sum()) / t2) for neg in negs]
            p = [v / sum(e) for v in e]
            entropy = -sum(v * math.log(v) for v in p if v > 0)
            conf = 1 - entropy / math.log(n)
            if variant == "ascl":
                w = [min(K * conf * v, 1.0) for v in p]
            else:
                top = sorted(range(n), key=lambda j: p[j], reverse=True)[:int(K)]
                w = [(conf if variant == "ahcl" else 1.0) if j in top else 0.0 for j in range(n)]
            target = [1.0] + w
            target = [v / sum(target) for v in target]
            a = unit(q[c, b])
            logits = [(a * unit(k[c, b].detach())).sum() / t1] + [(a * neg).sum() / t1 for neg in negs]
            log_z = torch.log(sum(torch.exp(x) for x in logits))
            head = head - sum(t * (x - log_z) for t, x in zip(target, logits))
        total = total + head / B
    return total


# ---- comparison helpers ---------------------------------------------------------------------------------------

def phi_params(seq):
    """The four parameters of an nn.Sequential(Linear, ReLU, Linear)."""
    return [seq[0].weight, seq[0].bias, seq[2].weight, seq[2].bias]


def rel_err(a, b):
    """max |a - b| / max |b| (0 when both are zero)."""
    scale = b.abs().max()
    diff = (a - b).abs().max()
    return float(diff / scale) if scale > 0 else float(diff)


# ---- bounded AMCL forms (docs/amcl.md, "The three forms") --------------------------------------------------------

def nll(residual, t, d):
    return residual / t + d / 2 * torch.log(t)


def _soft_target(key, chosen, K, t2):
    """ASCL's target over [positive, chosen] from the key's similarities to the chosen negatives."""
    e = [torch.exp((key * n).sum() / t2) for n in chosen]
    p = [v / sum(e) for v in e]
    conf = 1 + sum(v * torch.log(v) for v in p) / math.log(len(chosen))
    w = [torch.clamp(K * conf * v, max=1.0) for v in p]
    total = 1 + sum(w)
    return [1 / total] + [v / total for v in w]


def bounded_anchor(params, anchor, positive, negatives, topk, form, beta, tau_min, tau_max, dim, d,
                   key=None, K=None, t2=None):
    """One anchor's loss in the hetero or post form; with key/K/t2, ASCL's soft target over the candidates."""
    s_pos = (anchor * positive).sum()
    sg = (lambda x: x.detach()) if form == "hetero" else (lambda x: x)     # hetero: phi reads detached vectors
    t_pos = tau(params, sg(anchor), sg(positive), tau_min, tau_max)
    order = sorted(range(len(negatives)), key=lambda j: float((anchor * negatives[j]).sum().detach()), reverse=True)
    chosen = [negatives[j] for j in order[:min(topk, len(negatives))]]
    s = [s_pos] + [(anchor * n).sum() for n in chosen]
    t = [t_pos] + [tau(params, sg(anchor), sg(n), tau_min, tau_max) for n in chosen]
    if form == "hetero":
        logits = [si / ti.detach() for si, ti in zip(s, t)]
    else:
        logits = [si / ti - beta * omega(ti, dim) for si, ti in zip(s, t)]
    log_z = torch.log(sum(torch.exp(x) for x in logits))
    target = [1.0] + [0.0] * len(chosen) if key is None else _soft_target(key, chosen, K, t2)
    loss = -sum(w * (x - log_z) for w, x in zip(target, logits))
    if form == "hetero":
        loss = loss + nll(1 - s_pos.detach(), t_pos, d)
    return loss


def bounded_simclr(za, zb, params, form, beta, topk, tau_min, tau_max, d):
    C, B, D = za.shape
    total = 0.0
    for c in range(C):
        views = [unit(za[c, i]) for i in range(B)] + [unit(zb[c, i]) for i in range(B)]
        head = 0.0
        for i in range(2 * B):
            p = (i + B) % (2 * B)
            negatives = [views[j] for j in range(2 * B) if j not in (i, p)]
            head = head + bounded_anchor(params, views[i], views[p], negatives, topk, form, beta, tau_min, tau_max,
                                         D, d)
        total = total + head / (2 * B)
    return total


def bounded_moco(za, zb, queue, keys, params, form, beta, topk, tau_min, tau_max, d):
    C, B, D = za.shape
    total = 0.0
    for c in range(C):
        head = 0.0
        for i in range(2 * B):
            anchor = unit(za[c, i]) if i < B else unit(zb[c, i - B])
            positive = unit(keys[1][c, i].detach()) if i < B else unit(keys[0][c, i - B].detach())
            negatives = [unit(queue[c, j].detach()) for j in range(queue.shape[1])]
            head = head + bounded_anchor(params, anchor, positive, negatives, topk, form, beta, tau_min, tau_max,
                                         D, d)
        total = total + head / (2 * B)
    return total


def bounded_ascl(q, k, queue, params, form, beta, topk, tau_min, tau_max, d, K, t2):
    """AMCL with ASCL's soft targets, one direction: anchors q, positives keys k, negatives the queue."""
    C, B, D = q.shape
    total = 0.0
    for c in range(C):
        head = 0.0
        for b in range(B):
            key = unit(k[c, b].detach())
            negatives = [unit(queue[c, j].detach()) for j in range(queue.shape[1])]
            head = head + bounded_anchor(params, unit(q[c, b]), key, negatives, topk, form, beta, tau_min, tau_max,
                                         D, d, key=key, K=K, t2=t2)
        total = total + head / B
    return total


def hetero_simsiam(pa, pb, za, zb, params, tau_min, tau_max, d):
    C, B, D = pa.shape
    total = 0.0
    for c in range(C):
        head = 0.0
        for b in range(B):
            for p, z in ((unit(pa[c, b]), unit(zb[c, b].detach())), (unit(pb[c, b]), unit(za[c, b].detach()))):
                s, t = (p * z).sum(), tau(params, p.detach(), z, tau_min, tau_max)
                head = head - 0.5 * s / t.detach() + 0.5 * nll(1 - s.detach(), t, d)
        total = total + head / B
    return total


def hetero_barlow(za, zb, params, lambd, tau_min, tau_max, d):
    C, B, D = za.shape
    total = 0.0
    for c in range(C):
        cc = _cross_correlation(za[c], zb[c])
        for l in range(D):
            for m in range(D):
                t = tau(params, za[c][:, l].detach(), zb[c][:, m].detach(), tau_min, tau_max)
                r = (1 - cc[l][m]) ** 2 if l == m else cc[l][m] ** 2
                weight = 1.0 if l == m else lambd
                total = total + weight * r / t.detach() + nll(r.detach(), t, d)
    return total


def vicreg(za, zb, sim_weight, var_weight, cov_weight, eps):
    """VICReg (Bardes et al. 2022, Eqs. 1-6 with the authors' 1/2 on the variance term), one head at a time."""
    C, B, D = za.shape

    def mean(z, d):
        return sum(z[b, d] for b in range(B)) / B

    def cov(z, i, j):
        mi, mj = mean(z, i), mean(z, j)
        return sum((z[b, i] - mi) * (z[b, j] - mj) for b in range(B)) / (B - 1)

    def variance(z):
        return sum(torch.relu(1 - torch.sqrt(cov(z, d, d) + eps)) for d in range(D)) / D

    def covariance(z):
        return sum(cov(z, i, j) ** 2 for i in range(D) for j in range(D) if i != j) / D

    total = 0.0
    for c in range(C):
        a, b = za[c], zb[c]
        invariance = sum((a[n, d] - b[n, d]) ** 2 for n in range(B) for d in range(D)) / (B * D)
        total = total + (sim_weight * invariance + var_weight * (variance(a) + variance(b)) / 2
                         + cov_weight * (covariance(a) + covariance(b)))
    return total


def dino(student, teacher, center, student_temp, teacher_temp):
    """DINO (Caron et al. 2021, Algorithm 1 with multi-crop): teacher views g, student views v != g, one image b
    at a time: H(p_t, p_s) = -sum_k p_t[k] log p_s[k], p_t = softmax((t - c) / tau_t) without gradient."""
    G, B, K = teacher.shape
    V = student.shape[0]
    total, pairs = 0.0, 0
    for g in range(G):
        for v in range(V):
            if v == g:
                continue
            for b in range(B):
                t = [float((teacher[g, b, k].detach() - center[k]) / teacher_temp) for k in range(K)]
                top = max(t)
                z = sum(math.exp(x - top) for x in t)
                p_t = [math.exp(x - top) / z for x in t]                        # constants: no gradient
                logits = student[v, b] / student_temp
                log_norm = torch.log(sum(torch.exp(logits[k]) for k in range(K)))
                total = total - sum(p_t[k] * (logits[k] - log_norm) for k in range(K)) / B
            pairs += 1
    return total / pairs


def multi_positive_nt_xent(z, temperature):
    """NT-Xent with every other view of the same image as a positive (multi-crop), z (C, V, B, D)."""
    C, V, B, D = z.shape
    total = 0.0
    for c in range(C):
        views = [(v, b, unit(z[c, v, b])) for v in range(V) for b in range(B)]
        head = 0.0
        for i, (v, b, a) in enumerate(views):
            denom = sum(torch.exp((a * x).sum() / temperature) for j, (_, _, x) in enumerate(views) if j != i)
            positives = [x for (u, e, x) in views if e == b and u != v]
            head = head - sum(torch.log(torch.exp((a * p).sum() / temperature) / denom) for p in positives) / (V - 1)
        total = total + head / (V * B)
    return total


def multi_view_siamese(p, t, byol):
    """Every view v's prediction against every other global view g's sg target (SimSiam: -cos; BYOL: 2 - 2 cos,
    twice the mean over pairs so that two views give the two directions' sum), p (C, V, B, D), t (C, G, B, D)."""
    C, V, B, D = p.shape
    G = t.shape[1]
    total = 0.0
    for c in range(C):
        pairs = [(g, v) for g in range(G) for v in range(V) if v != g]
        head = 0.0
        for g, v in pairs:
            cosines = [cos(p[c, v, b], t[c, g, b].detach()) for b in range(B)]
            head = head + sum((2 - 2 * x) if byol else -x for x in cosines) / B
        total = total + head / len(pairs) * (2 if byol else 1)
    return total
