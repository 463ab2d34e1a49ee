"""The compiled hot loop of the flip-graph search (numba, no Python objects inside).

A scheme is held as R rank-one terms ``x_r ⊗ y_r ⊗ z_r`` (slots 0, 1, 2 = U, V, W columns).

Over Z2 every factor vector is one uint64 bitmask (entry k = bit k), so adding two vectors is
one XOR and comparing them one integer comparison: ``X[r, s]`` is slot s of term r;
``N[r, s]`` counts the terms holding that factor in slot s, kept up to date by the walk.

Over Z every factor vector is an int8 row ``V[r, s, :]`` with a 64-bit *linear* hash
``K[r, s] = Σ_k V[r,s,k]·H[s,k] (mod 2^64)``; because the hash is linear, ``K(-v) = -K(v)``,
so "equal up to sign" is two integer comparisons, confirmed on the full vector. Coefficients
are kept within ``|c| <= bound`` (flips that would leave the bound are not taken), so every
scheme stays integral and sparse.

Moves (each maps a valid scheme to a valid scheme of the same tensor):
  flip       a⊗b⊗c + a⊗b'⊗c'  ->  a⊗(b+σb')⊗c + a⊗b'⊗(c'-σc)         (σ = ±1; any slot shared)
  reduction  a⊗b⊗c + a⊗b⊗c'   ->  a⊗b⊗(c+c')   and a term with a zero factor is dropped
  plus       a⊗b⊗c + a'⊗b'⊗c' ->  (a-a')⊗b⊗c + a'⊗(b+b')⊗c + a'⊗b'⊗(c'-c)   (rank + 1)

The random numbers come from a xorshift64 generator whose state is one uint64 in ``rng[0]``:
a walk is reproducible from its seed and its state can be checkpointed.

``walk_*`` return codes: 0 = flip budget of this call used up; 1 = rank fell below
``stop_rank``; 2 = a reduction brought the rank back to ``report_rank`` (a new scheme at the
best rank, for the pool); 3 = no move possible (no two terms share a factor, no plus allowed).
``meta`` (int64[8]) carries the state between calls: [0] rank, [1] flips since the rank last
changed, [2] flips done by this call, [3] plus transitions done by this call,
[4] reductions done by this call.
"""

from __future__ import annotations

import numpy as np
from numba import njit

U64 = np.uint64
_ZERO = np.uint64(0)

META_RANK, META_SINCE, META_FLIPS, META_PLUS, META_REDUCTIONS = 0, 1, 2, 3, 4
META_SIZE = 8
WORKLIST = 64  # terms a reduction pass can have queued


@njit(cache=True, inline="always")
def _next(rng):
    x = rng[0]
    x ^= x << np.uint64(13)
    x ^= x >> np.uint64(7)
    x ^= x << np.uint64(17)
    rng[0] = x
    return x


@njit(cache=True, inline="always")
def _rand(rng, n):
    """Uniform-ish integer in [0, n)."""
    return np.int64((_next(rng) >> np.uint64(11)) % np.uint64(n))


# ====================================================================== shared by both walks
# Small pieces the Z2 and Z walks have in common, inlined into both (numba inline="always"),
# so folding them costs the walk nothing. The walks themselves stay two functions: their
# factor representations (one uint64 mask vs. an int8 row plus a hash) differ in every move.
@njit(cache=True, inline="always")
def _worklist(wl, i, j):
    """Start a reduction pass in the buffer wl (int64[WORKLIST], allocated once per walk call, not
    per flip) from term i, and j unless it is -1. Returns the length."""
    wl[0] = i
    if j >= 0:
        wl[1] = j
        return 2
    return 1


@njit(cache=True, inline="always")
def _moved(wl, n, x, last):
    """Term x was dropped and the last term moved into its place: fix the worklist's indices."""
    for q in range(n):
        if wl[q] == x:
            wl[q] = -1
        elif wl[q] == last:
            wl[q] = x


@njit(cache=True, inline="always")
def _push(wl, n, k, x, last):
    """Queue term k (merged into) after term x was dropped; k was the last term if it moved. Returns n."""
    if k == last:
        k = x
    if n < WORKLIST - 1:
        wl[n] = k
        n += 1
    return n


@njit(cache=True, inline="always")
def _plus_candidates(rng, R):
    """Two random terms and two distinct slots s, t for a plus transition."""
    i = _rand(rng, R)
    j = _rand(rng, R)
    s = _rand(rng, 3)
    t = (s + 1 + _rand(rng, 2)) % 3
    return i, j, s, t


@njit(cache=True, inline="always")
def _flip_slot(rng, s):
    """The slot a flip on shared slot s adds into (one of the other two, at random)."""
    if _rand(rng, 2) == 0:
        return (s + 1) % 3
    return (s + 2) % 3


@njit(cache=True, inline="always")
def _after_reduction(R, before, since, stop_rank, report_rank):
    """(since, code) after a move's reductions: code 1/2 end the call (see the module doc), -1 walks on."""
    if R < before:
        if R < stop_rank:
            return 0, 1
        if R == report_rank:
            return 0, 2
        return 0, -1
    return since, -1


@njit(cache=True, inline="always")
def _finish(meta, R, since, flips, code):
    meta[META_RANK] = R
    meta[META_SINCE] = since
    meta[META_FLIPS] = flips
    return code


@njit(cache=True, inline="always")
def _begin(meta):
    """Clear this call's counters; returns the walk's (rank, flips since the rank last changed)."""
    meta[META_FLIPS] = 0
    meta[META_PLUS] = 0
    meta[META_REDUCTIONS] = 0
    return meta[META_RANK], meta[META_SINCE]


# ====================================================================== Z2
# The shared-factor counts: N[r, s] = how many of the terms 0..R-1 hold X[r, s] in slot s (itself
# included), kept up to date at every write of a factor (one pass over slot s, see _z2_changed).
# "Does term i share slot s with another term" is then one load: the flip picker rejects most of
# its random draws and the reduction check most of its terms on that load, without a pass.
@njit(cache=True)
def z2_counts(X, R, N):
    """N[r, s] from scratch for the terms 0..R-1 (the walk keeps it up to date from here)."""
    for r in range(R):
        for s in range(3):
            c = 0
            for k in range(R):
                if X[k, s] == X[r, s]:
                    c += 1
            N[r, s] = c


@njit(cache=True, inline="always")
def _z2_changed(X, N, R, r, s, old):
    """X[r, s] was ``old`` and now holds a new value: fix the counts of the terms 0..R-1."""
    v = X[r, s]
    if v == old:
        return
    c = 1
    for k in range(R):
        if k != r:
            x = X[k, s]
            if x == old:
                N[k, s] -= 1
            elif x == v:
                N[k, s] += 1
                c += 1
    N[r, s] = c


@njit(cache=True, inline="always")
def _z2_counted(X, N, R, r):
    """Term r (r >= R, just written) joins the terms 0..R-1: count its factors in."""
    for s in range(3):
        v = X[r, s]
        c = 1
        for k in range(R):
            if X[k, s] == v:
                N[k, s] += 1
                c += 1
        N[r, s] = c


@njit(cache=True, inline="always")
def _z2_find_pair(X, N, R, i):
    """A term k != i that shares two factors with term i, and the slot that differs; else (-1, -1)."""
    # a term sharing two factors with i makes both of their counts at least 2: most checks end here
    if (N[i, 0] >= 2) + (N[i, 1] >= 2) + (N[i, 2] >= 2) < 2:
        return -1, -1
    a = X[i, 0]
    b = X[i, 1]
    c = X[i, 2]
    for k in range(R):
        if k == i:
            continue
        ea = X[k, 0] == a
        eb = X[k, 1] == b
        ec = X[k, 2] == c
        if ea and eb:
            return k, 2
        if ea and ec:
            return k, 1
        if eb and ec:
            return k, 0
    return -1, -1


@njit(cache=True, inline="always")
def _z2_remove(X, N, R, x, wl, n):
    """Drop term x (the last term moves into its place); fix the counts and the worklist. Returns R-1."""
    last = R - 1
    for s in range(3):
        v = X[x, s]
        for k in range(R):
            if k != x and X[k, s] == v:
                N[k, s] -= 1
    for s in range(3):
        X[x, s] = X[last, s]
        N[x, s] = N[last, s]
    _moved(wl, n, x, last)
    return last


@njit(cache=True, inline="always")
def _z2_reduce(X, N, R, i, j, counters, wl):
    """Apply every reduction that terms i and j (just changed) take part in. Returns the rank."""
    n = _worklist(wl, i, j)
    while n > 0:
        n -= 1
        x = wl[n]
        if x < 0 or x >= R:
            continue
        if X[x, 0] == _ZERO or X[x, 1] == _ZERO or X[x, 2] == _ZERO:
            R = _z2_remove(X, N, R, x, wl, n)
            counters[META_REDUCTIONS] += 1
            continue
        k, m = _z2_find_pair(X, N, R, x)
        if k < 0:
            continue
        old = X[k, m]
        X[k, m] ^= X[x, m]
        _z2_changed(X, N, R, k, m, old)
        last = R - 1
        R = _z2_remove(X, N, R, x, wl, n)
        counters[META_REDUCTIONS] += 1
        n = _push(wl, n, k, x, last)
    return R


@njit(cache=True)
def _z2_reduce3(X, N, R, i, j, k, counters, wl):
    R2 = _z2_reduce(X, N, R, i, j, counters, wl)
    if R2 == R:
        return _z2_reduce(X, N, R, k, -1, counters, wl)
    return z2_reduce_all(X, N, R2, counters)


@njit(cache=True, inline="always")
def _z2_pick_flip(X, N, R, rng):
    """A random pair (i, j) of terms sharing slot s; (-1, -1, -1) if none was found."""
    for _attempt in range(4 * R + 16):
        i = _rand(rng, R)
        s = _rand(rng, 3)
        cnt = N[i, s]
        if cnt < 2:
            continue
        key = X[i, s]
        t = _rand(rng, cnt - 1)
        for k in range(R):
            if k != i and X[k, s] == key:
                if t == 0:
                    return i, k, s
                t -= 1
    # exhaustive fallback: any shared factor at all?
    for s in range(3):
        for i in range(R):
            for k in range(i + 1, R):
                if X[i, s] == X[k, s]:
                    return i, k, s
    return -1, -1, -1


@njit(cache=True)
def z2_flip(X, R, i, j, s, t):
    """Flip terms i, j sharing slot s: y_i += y_j in slot t, z_j -= z_i in the remaining slot."""
    u = 3 - s - t
    X[i, t] ^= X[j, t]
    X[j, u] ^= X[i, u]


@njit(cache=True)
def z2_plus(X, R, i, j, s, t):
    """Plus transition on terms i = a⊗b⊗c, j = a'⊗b'⊗c' (a = slot s, b = slot t); new term at index R:

    a⊗b⊗c + a'⊗b'⊗c' = (a-a')⊗b⊗c + a'⊗(b+b')⊗c + a'⊗b'⊗(c'-c)
    """
    u = 3 - s - t
    X[R, s] = X[j, s]
    X[R, t] = X[i, t] ^ X[j, t]
    X[R, u] = X[i, u]
    X[i, s] ^= X[j, s]
    X[j, u] ^= X[i, u]


@njit(cache=True)
def z2_reduce_all(X, N, R, counters):
    """Reduce a whole scheme (used on a starting scheme; N its counts, see z2_counts). Returns the rank."""
    wl = np.empty(WORKLIST, np.int64)
    changed = True
    while changed:
        changed = False
        for x in range(R):
            before = R
            R = _z2_reduce(X, N, R, x, -1, counters, wl)
            if R != before:
                changed = True
                break
    return R


@njit(cache=True)
def walk_z2(X, N, meta, rng, max_flips, plateau, plus_limit, stop_rank, report_rank):
    """The Z2 walk; N holds the shared-factor counts of X (see z2_counts) and is kept up to date."""
    R, since = _begin(meta)
    cap = X.shape[0]
    wl = np.empty(WORKLIST, np.int64)
    flips = 0
    code = 0
    while flips < max_flips:
        if since >= plateau and R < plus_limit and R < cap:
            # plus transition between two terms that differ in every slot
            for _attempt in range(32):
                i, j, s, t = _plus_candidates(rng, R)
                u = 3 - s - t
                if i != j and X[i, s] != X[j, s] and X[i, t] != X[j, t] and X[i, u] != X[j, u]:
                    old_i, old_j = X[i, s], X[j, u]
                    z2_plus(X, R, i, j, s, t)
                    _z2_changed(X, N, R, i, s, old_i)
                    _z2_changed(X, N, R, j, u, old_j)
                    _z2_counted(X, N, R, R)
                    R += 1
                    meta[META_PLUS] += 1
                    R = _z2_reduce3(X, N, R, i, j, R - 1, meta, wl)
                    break
            since = 0
        i, j, s = _z2_pick_flip(X, N, R, rng)
        if i < 0:
            if R < plus_limit and R < cap:
                since = plateau
                flips += 1
                continue
            code = 3
            break
        t = _flip_slot(rng, s)
        u = 3 - s - t
        old_i, old_j = X[i, t], X[j, u]
        z2_flip(X, R, i, j, s, t)
        _z2_changed(X, N, R, i, t, old_i)
        _z2_changed(X, N, R, j, u, old_j)
        flips += 1
        since += 1
        before = R
        R = _z2_reduce(X, N, R, i, j, meta, wl)
        since, code = _after_reduction(R, before, since, stop_rank, report_rank)
        if code > 0:
            break
    return _finish(meta, R, since, flips, max(code, 0))


# ====================================================================== Z
@njit(cache=True)
def z_key(V, H, r, s, L):
    h = _ZERO
    for k in range(L):
        c = V[r, s, k]
        if c != 0:
            h += np.uint64(np.int64(c)) * H[s, k]
    return h


@njit(cache=True)
def _z_same(V, L, i, k, s, sign):
    for q in range(L):
        if V[k, s, q] != sign * V[i, s, q]:
            return False
    return True


@njit(cache=True)
def _z_rel(V, K, L, i, k, s):
    """+1 if slot s of term k equals that of term i, -1 if it is its negative, else 0."""
    a = K[i, s]
    b = K[k, s]
    if b == a and _z_same(V, L, i, k, s, 1):
        return 1
    if b == _ZERO - a and _z_same(V, L, i, k, s, -1):
        return -1
    return 0


@njit(cache=True)
def _z_is_zero(V, K, L, r, s):
    if K[r, s] != _ZERO:
        return False
    for q in range(L):
        if V[r, s, q] != 0:
            return False
    return True


@njit(cache=True)
def _z_negate(V, K, L, r, s):
    for q in range(L):
        V[r, s, q] = -V[r, s, q]
    K[r, s] = _ZERO - K[r, s]


@njit(cache=True)
def _z_remove(V, K, R, x, wl, n):
    last = R - 1
    for s in range(3):
        K[x, s] = K[last, s]
        for q in range(V.shape[2]):
            V[x, s, q] = V[last, s, q]
    _moved(wl, n, x, last)
    return last


@njit(cache=True)
def _z_reduce(V, K, H, dims, R, i, j, hard, counters, wl):
    """Apply every reduction that terms i and j (just changed) take part in. Returns the rank."""
    n = _worklist(wl, i, j)
    while n > 0:
        n -= 1
        x = wl[n]
        if x < 0 or x >= R:
            continue
        if _z_is_zero(V, K, dims[0], x, 0) or _z_is_zero(V, K, dims[1], x, 1) or _z_is_zero(V, K, dims[2], x, 2):
            R = _z_remove(V, K, R, x, wl, n)
            counters[META_REDUCTIONS] += 1
            continue
        found = -1
        m = -1
        sp = 0
        for k in range(R):
            if k == x:
                continue
            r0 = _z_rel(V, K, dims[0], x, k, 0)
            r1 = _z_rel(V, K, dims[1], x, k, 1)
            r2 = _z_rel(V, K, dims[2], x, k, 2)
            if r0 != 0 and r1 != 0:
                found, m, sp = k, 2, r0 * r1
            elif r0 != 0 and r2 != 0:
                found, m, sp = k, 1, r0 * r2
            elif r1 != 0 and r2 != 0:
                found, m, sp = k, 0, r1 * r2
            if found >= 0:
                break
        if found < 0:
            continue
        k = found
        # term k = (σ_p x_p) ⊗ (σ_q x_q) ⊗ k_m = x_p ⊗ x_q ⊗ (σ_p σ_q k_m); merge into k
        L = dims[m]
        ok = True
        for q in range(L):
            c = np.int64(sp) * np.int64(V[k, m, q]) + np.int64(V[x, m, q])
            if c > hard or c < -hard:
                ok = False
                break
        if not ok:
            continue
        for q in range(L):
            V[k, m, q] = np.int8(np.int64(sp) * np.int64(V[k, m, q]) + np.int64(V[x, m, q]))
        for s in range(3):
            if s != m:
                for q in range(dims[s]):
                    V[k, s, q] = V[x, s, q]
                K[k, s] = K[x, s]
        K[k, m] = z_key(V, H, k, m, L)
        last = R - 1
        R = _z_remove(V, K, R, x, wl, n)
        counters[META_REDUCTIONS] += 1
        n = _push(wl, n, k, x, last)
    return R


@njit(cache=True)
def _z_pick_flip(V, K, dims, R, rng):
    """A random pair (i, j) sharing slot s up to sign; returns (i, j, s, sign)."""
    for _attempt in range(4 * R + 16):
        i = _rand(rng, R)
        s = _rand(rng, 3)
        a = K[i, s]
        na = _ZERO - a
        cnt = 0
        for k in range(R):
            if k != i and (K[k, s] == a or K[k, s] == na):
                cnt += 1
        if cnt == 0:
            continue
        t = _rand(rng, cnt)
        for k in range(R):
            if k != i and (K[k, s] == a or K[k, s] == na):
                if t == 0:
                    rel = _z_rel(V, K, dims[s], i, k, s)
                    if rel != 0:
                        return i, k, s, rel
                    break
                t -= 1
    for s in range(3):
        for i in range(R):
            for k in range(i + 1, R):
                rel = _z_rel(V, K, dims[s], i, k, s)
                if rel != 0:
                    return i, k, s, rel
    return -1, -1, -1, 0


@njit(cache=True)
def z_flip(V, K, H, dims, i, j, s, t, sign, bound):
    """Flip terms i, j (slot s of j = slot s of i, normalised first): y_i += σ y_j, z_j -= σ z_i.

    Returns False (and changes nothing) if a coefficient would leave [-bound, bound].
    """
    u = 3 - s - t
    for q in range(dims[t]):
        c = np.int64(V[i, t, q]) + sign * np.int64(V[j, t, q])
        if c > bound or c < -bound:
            return False
    for q in range(dims[u]):
        c = np.int64(V[j, u, q]) - sign * np.int64(V[i, u, q])
        if c > bound or c < -bound:
            return False
    for q in range(dims[t]):
        V[i, t, q] = np.int8(np.int64(V[i, t, q]) + sign * np.int64(V[j, t, q]))
    for q in range(dims[u]):
        V[j, u, q] = np.int8(np.int64(V[j, u, q]) - sign * np.int64(V[i, u, q]))
    K[i, t] = z_key(V, H, i, t, dims[t])
    K[j, u] = z_key(V, H, j, u, dims[u])
    return True


@njit(cache=True)
def z_plus(V, K, H, dims, R, i, j, s, t, bound):
    """Plus transition (see z2_plus): i -> (a-a')⊗b⊗c, new R = a'⊗(b+b')⊗c, j -> a'⊗b'⊗(c'-c)."""
    u = 3 - s - t
    for q in range(dims[s]):
        c = np.int64(V[i, s, q]) - np.int64(V[j, s, q])
        if c > bound or c < -bound:
            return False
    for q in range(dims[t]):
        c = np.int64(V[i, t, q]) + np.int64(V[j, t, q])
        if c > bound or c < -bound:
            return False
    for q in range(dims[u]):
        c = np.int64(V[j, u, q]) - np.int64(V[i, u, q])
        if c > bound or c < -bound:
            return False
    for q in range(V.shape[2]):
        V[R, s, q] = V[j, s, q]
        V[R, t, q] = np.int8(np.int64(V[i, t, q]) + np.int64(V[j, t, q]))
        V[R, u, q] = V[i, u, q]
    for q in range(dims[s]):
        V[i, s, q] = np.int8(np.int64(V[i, s, q]) - np.int64(V[j, s, q]))
    for q in range(dims[u]):
        V[j, u, q] = np.int8(np.int64(V[j, u, q]) - np.int64(V[i, u, q]))
    K[R, s] = K[j, s]
    K[R, t] = z_key(V, H, R, t, dims[t])
    K[R, u] = K[i, u]
    K[i, s] = z_key(V, H, i, s, dims[s])
    K[j, u] = z_key(V, H, j, u, dims[u])
    return True


@njit(cache=True)
def z_reduce_all(V, K, H, dims, R, hard, counters):
    wl = np.empty(WORKLIST, np.int64)
    changed = True
    while changed:
        changed = False
        for x in range(R):
            before = R
            R = _z_reduce(V, K, H, dims, R, x, -1, hard, counters, wl)
            if R != before:
                changed = True
                break
    return R


@njit(cache=True)
def _z_reduce3(V, K, H, dims, R, i, j, k, hard, counters, wl):
    """After a plus transition on i, j (new term k): reductions through i, j, else through k."""
    R2 = _z_reduce(V, K, H, dims, R, i, j, hard, counters, wl)
    if R2 == R:
        return _z_reduce(V, K, H, dims, R, k, -1, hard, counters, wl)
    return z_reduce_all(V, K, H, dims, R2, hard, counters)


@njit(cache=True)
def walk_z(V, K, H, dims, meta, rng, max_flips, plateau, plus_limit, stop_rank, report_rank, bound, hard):
    R, since = _begin(meta)
    cap = V.shape[0]
    wl = np.empty(WORKLIST, np.int64)
    flips = 0
    code = 0
    while flips < max_flips:
        if since >= plateau and R < plus_limit and R < cap:
            # plus transition between two terms that differ (up to sign) in every slot
            for _attempt in range(32):
                i, j, s, t = _plus_candidates(rng, R)
                u = 3 - s - t
                if (i != j and _z_rel(V, K, dims[s], i, j, s) == 0 and _z_rel(V, K, dims[t], i, j, t) == 0
                        and _z_rel(V, K, dims[u], i, j, u) == 0):
                    if z_plus(V, K, H, dims, R, i, j, s, t, bound):
                        R += 1
                        meta[META_PLUS] += 1
                        R = _z_reduce3(V, K, H, dims, R, i, j, R - 1, hard, meta, wl)
                        break
            since = 0
        i, j, s, rel = _z_pick_flip(V, K, dims, R, rng)
        if i < 0:
            if R < plus_limit and R < cap:
                since = plateau
                flips += 1
                continue
            code = 3
            break
        t = _flip_slot(rng, s)
        u = 3 - s - t
        if rel < 0:
            # x_j = -x_i: move the sign of term j from slot s into slot u (the product is unchanged)
            _z_negate(V, K, dims[s], j, s)
            _z_negate(V, K, dims[u], j, u)
        sign = np.int64(1) if _rand(rng, 2) == 0 else np.int64(-1)
        flips += 1
        since += 1
        if not z_flip(V, K, H, dims, i, j, s, t, sign, bound):
            if not z_flip(V, K, H, dims, i, j, s, t, -sign, bound):
                continue
        before = R
        R = _z_reduce(V, K, H, dims, R, i, j, hard, meta, wl)
        since, code = _after_reduction(R, before, since, stop_rank, report_rank)
        if code > 0:
            break
    return _finish(meta, R, since, flips, max(code, 0))
