"""Compiled kernels: epsilon-greedy tabular Q-learning and the greedy, Kelly-sized evaluation.

The per-step work mirrors ``rof_pipelines/bench/qlearn_ref.c`` so the two can be compared as a ratio:
an inline xorshift64 generator held in a local ``uint64`` (numpy's generator inside numba is what keeps
ports at half the speed of C), first-max argmax, visit-count adaptive alpha and one Q update with the
max over the next state. Everything is passed in and returned; nothing is global, so a seed fixes the
result.

Conventions shared with :mod:`rof_pipelines.core.rl.env`:

* ``mstate[t]`` (length n) is the market state of bar t; the table row is ``mstate[t] * n_pos + pos``.
* ``step_ret[t]`` (length n - 1) is what a unit exposure chosen at bar t earns until the next fill.
* ``trans[pos, action]`` is the position index after ``action``; ``expo[pos]`` its exposure (0, 1, -1).
* ``cost`` (fee + slippage) is charged on every unit of exposure changed.
"""

import numpy as np
from numba import njit

from rof_pipelines.core.kelly import kelly_fraction_window

N_ACTIONS = 3
HOLD, BUY, SELL = 0, 1, 2

_U53 = 1.0 / 9007199254740992.0  # 2**-53: maps the top 53 bits of the generator onto [0, 1)


@njit(cache=True, error_model="numpy")  # no zero-division branch in the hot loop
def train_kernel(
    q: np.ndarray,
    visits: np.ndarray,
    mstate: np.ndarray,
    step_ret: np.ndarray,
    n_pos: int,
    trans: np.ndarray,
    expo: np.ndarray,
    alpha0: float,
    alpha_decay: float,
    gamma: float,
    epsilon: float,
    epsilon_decay: float,
    epsilon_min: float,
    cost: float,
    risk_aversion: float,
    episodes: int,
    rng: np.uint64,
    actions_out: np.ndarray,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.uint64]:
    """Train ``q``/``visits`` in place; return per-episode (total reward, final equity, position
    changes) and the generator state. ``actions_out`` of shape (episodes, n - 1) records every action;
    pass shape (0, 0) to skip recording (the benchmark does).

    Reward of a step: ``e' * r - cost * |e' - e| - risk_aversion * (e' * r)**2`` where e, e' are the
    exposures before and after the action and r the step return; equity compounds ``1 + e' * r - cost *
    |e' - e|``. Epsilon decays multiplicatively after each episode, never below ``epsilon_min``.
    """
    n_steps = step_ret.shape[0]
    ep_reward = np.zeros(episodes, np.float64)
    ep_equity = np.ones(episodes, np.float64)
    ep_trades = np.zeros(episodes, np.int64)
    record = actions_out.shape[0] > 0
    s13 = np.uint64(13)
    s7 = np.uint64(7)
    s17 = np.uint64(17)
    s11 = np.uint64(11)
    three = np.uint64(N_ACTIONS)
    x = np.uint64(rng)
    eps = epsilon
    for e in range(episodes):
        pos = 0
        eq = 1.0
        total = 0.0
        changes = 0
        for t in range(n_steps):
            s = mstate[t] * n_pos + pos
            x ^= x << s13
            x ^= x >> s7
            x ^= x << s17
            u = np.float64(np.int64(x >> s11)) * _U53
            if u < eps:
                x ^= x << s13
                x ^= x >> s7
                x ^= x << s17
                act = np.int64(x % three)
            else:
                act = 0
                best = q[s, 0]
                if q[s, 1] > best:
                    best = q[s, 1]
                    act = 1
                if q[s, 2] > best:
                    act = 2
            npos = trans[pos, act]
            e_new = expo[npos]
            gross = e_new * step_ret[t]
            r = gross - cost * abs(e_new - expo[pos])
            eq *= 1.0 + r
            if risk_aversion != 0.0:
                r -= risk_aversion * gross * gross
            s2 = mstate[t + 1] * n_pos + npos
            m = q[s2, 0]
            if q[s2, 1] > m:
                m = q[s2, 1]
            if q[s2, 2] > m:
                m = q[s2, 2]
            v = np.int64(visits[s, act]) + 1  # signed: int -> float is one instruction, uint64 is not
            visits[s, act] = v
            al = alpha0 / (1.0 + alpha_decay * v)
            q[s, act] += al * (r + gamma * m - q[s, act])
            if npos != pos:
                changes += 1
            if record:
                actions_out[e, t] = act
            total += r
            pos = npos
        ep_reward[e] = total
        ep_equity[e] = eq
        ep_trades[e] = changes
        eps *= epsilon_decay
        if eps < epsilon_min:
            eps = epsilon_min
    return ep_reward, ep_equity, ep_trades, x


@njit(cache=True)
def greedy_action(q: np.ndarray, s: int) -> int:
    """First maximum, so an unvisited (all-zero) row holds."""
    act = 0
    best = q[s, 0]
    if q[s, 1] > best:
        best = q[s, 1]
        act = 1
    if q[s, 2] > best:
        act = 2
    return act


@njit(cache=True)
def evaluate_kernel(
    q: np.ndarray,
    mstate: np.ndarray,
    step_ret: np.ndarray,
    times: np.ndarray,
    n_pos: int,
    trans: np.ndarray,
    expo: np.ndarray,
    cost: float,
    use_kelly: bool,
    window_trades: int,
    window_ns: int,
    min_trades: int,
    max_fraction: float,
    warmup_fraction: float,
    hist_ret: np.ndarray,
    hist_time: np.ndarray,
    stop_loss: float = 0.0,
    take_profit: float = 0.0,
) -> tuple[
    np.ndarray,
    np.ndarray,
    np.ndarray,
    np.ndarray,
    np.ndarray,
    np.ndarray,
    np.ndarray,
    np.ndarray,
    np.ndarray,
    float,
    int,
]:
    """Greedy walk through the bars with Kelly-sized positions, optionally with exit levels.

    Returns (actions, exposure held over each step, equity (n_steps + 1, starts at 1), trade entry
    step, exit step, direction, size, unit-size net return, trade count as a 1-element array, the
    Kelly fraction a new entry would get after the last bar, trades closed by a level).

    Stop-loss / take-profit (the strategy genes the optimiser tunes; 0 turns a level off, both off is
    the agent alone): an open trade whose running unit growth, entry cost included, is at or below
    ``1 - stop_loss`` or at or above ``1 + take_profit`` at decision t is closed at that fill (the
    closing action is recorded) instead of asking the agent, like a resting order watched at the bar
    opens; intrabar excursions are not seen.

    A trade's size is fixed when it opens: the Kelly fraction of the closed trades (``hist_*`` first,
    then this walk's) in the window, or ``warmup_fraction`` while fewer than ``min_trades``; 1.0 when
    ``use_kelly`` is false. A zero size still records the trade so the estimate can recover. The window
    is the last ``window_trades`` trades, or (``window_trades`` 0) those that closed after
    ``times[t] - window_ns``. An open position is liquidated, with cost, at the final mark.
    """
    n_steps = step_ret.shape[0]
    n_hist = hist_ret.shape[0]
    actions = np.empty(n_steps, np.int8)
    held = np.zeros(n_steps, np.float64)
    equity = np.empty(n_steps + 1, np.float64)
    equity[0] = 1.0
    cap = n_steps + 1
    tr_entry = np.empty(cap, np.int64)
    tr_exit = np.empty(cap, np.int64)
    tr_dir = np.empty(cap, np.int8)
    tr_size = np.empty(cap, np.float64)
    tr_ret = np.empty(cap, np.float64)
    k_ret = np.empty(n_hist + cap, np.float64)
    k_time = np.empty(n_hist + cap, np.int64)
    k_ret[:n_hist] = hist_ret
    k_time[:n_hist] = hist_time
    nk = n_hist
    k_lo = 0
    ntr = 0
    pos = 0
    size = 0.0
    growth = 1.0
    eq = 1.0
    forced = 0
    for t in range(n_steps):
        e_old = expo[pos]
        stopped = stop_loss > 0.0 and growth <= 1.0 - stop_loss
        taken = take_profit > 0.0 and growth >= 1.0 + take_profit
        if e_old != 0.0 and (stopped or taken):
            act = 2 if e_old > 0.0 else 1  # sell closes a long, buy covers a short
            forced += 1
        else:
            act = greedy_action(q, mstate[t] * n_pos + pos)
        npos = trans[pos, act]
        e_new = expo[npos]
        r = 0.0
        unit = 0.0
        if npos != pos:
            if e_old != 0.0:
                # Close: the exit fill pays the cost on the whole position.
                r -= cost * size * abs(e_old)
                growth *= 1.0 - cost * abs(e_old)
                tr_exit[ntr] = t
                tr_ret[ntr] = growth - 1.0
                k_ret[nk] = growth - 1.0
                k_time[nk] = times[t]
                nk += 1
                ntr += 1
            if e_new != 0.0:
                # Open (after the close if it was a reversal): the size is fixed here.
                if use_kelly:
                    if window_trades > 0:
                        k_lo = max(0, nk - window_trades)
                    else:
                        while k_lo < nk and k_time[k_lo] <= times[t] - window_ns:
                            k_lo += 1
                    if nk - k_lo < min_trades:
                        size = warmup_fraction
                    else:
                        size = kelly_fraction_window(k_ret, k_lo, nk, max_fraction)
                else:
                    size = 1.0
                growth = 1.0
                unit = -cost * abs(e_new)
                tr_entry[ntr] = t
                tr_dir[ntr] = np.int8(1) if e_new > 0.0 else np.int8(-1)
                tr_size[ntr] = size
        if e_new != 0.0:
            unit += e_new * step_ret[t]
            growth *= 1.0 + unit
            r += size * unit
            held[t] = size * e_new
        eq *= 1.0 + r
        actions[t] = act
        pos = npos
        equity[t + 1] = eq
    if expo[pos] != 0.0:
        growth *= 1.0 - cost * abs(expo[pos])
        eq *= 1.0 - cost * size * abs(expo[pos])
        equity[n_steps] = eq
        tr_exit[ntr] = n_steps
        tr_ret[ntr] = growth - 1.0
        k_ret[nk] = growth - 1.0
        k_time[nk] = times[n_steps]
        nk += 1
        ntr += 1
    # The fraction the next entry would get.
    if use_kelly:
        if window_trades > 0:
            k_lo = max(0, nk - window_trades)
        else:
            while k_lo < nk and k_time[k_lo] <= times[n_steps] - window_ns:
                k_lo += 1
        if nk - k_lo < min_trades:
            next_fraction = warmup_fraction
        else:
            next_fraction = kelly_fraction_window(k_ret, k_lo, nk, max_fraction)
    else:
        next_fraction = 1.0
    count = np.empty(1, np.int64)
    count[0] = ntr
    return (
        actions,
        held,
        equity,
        tr_entry[:ntr].copy(),
        tr_exit[:ntr].copy(),
        tr_dir[:ntr].copy(),
        tr_size[:ntr].copy(),
        tr_ret[:ntr].copy(),
        count,
        next_fraction,
        forced,
    )
