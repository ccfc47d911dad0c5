//! Optimisation: AdamW with decoupled weight decay, the linear warmup/decay schedule, global
//! grad-norm clipping and the fp16 dynamic loss scaler. Pure state machines over `Params`;
//! their whole state is saved in checkpoints. Never touches data or files.

use super::model::{q, Params, Touched};

pub const BETA1: f32 = 0.9;
pub const BETA2: f32 = 0.999;
pub const EPS: f32 = 1e-8;

/// Learning rate of the optimizer step with 0-based index `step` out of `total` steps:
/// linear warmup `lr·(step+1)/warmup` over the first `warmup` steps, then linear decay
/// `lr·(total−step)/(total−warmup)`, which reaches 0 right after the last step.
pub fn learning_rate(base: f64, step: u64, warmup: u64, total: u64) -> f64 {
    if step < warmup {
        return base * (step + 1) as f64 / warmup as f64;
    }
    if total <= warmup || step >= total {
        return if step >= total { 0.0 } else { base };
    }
    base * (total - step) as f64 / (total - warmup) as f64
}

/// The learning rate of step `step` under `kind`: [`learning_rate`] for linear decay; for
/// constant, the same warmup and then `base` for every later step (independent of `total`).
pub fn scheduled_rate(
    kind: crate::protocol::LrScheduler,
    base: f64,
    step: u64,
    warmup: u64,
    total: u64,
) -> f64 {
    match kind {
        crate::protocol::LrScheduler::Linear => learning_rate(base, step, warmup, total),
        crate::protocol::LrScheduler::Constant if step < warmup => {
            base * (step + 1) as f64 / warmup as f64
        }
        crate::protocol::LrScheduler::Constant => base,
    }
}

/// AdamW update (PyTorch's `torch.optim.AdamW` arithmetic), dense over every parameter in a
/// fixed order. `t` is the 1-based count of applied updates. Weight decay applies to the
/// feature weights only (not to CRF transitions).
pub fn adamw_step(
    p: &mut Params,
    g: &Params,
    m: &mut Params,
    v: &mut Params,
    lr: f64,
    weight_decay: f64,
    t: u64,
) {
    assert!(t >= 1);
    let bc1 = 1.0 - f64::from(BETA1).powi(t.min(i32::MAX as u64) as i32);
    let bc2 = 1.0 - f64::from(BETA2).powi(t.min(i32::MAX as u64) as i32);
    let step_size = (lr / bc1) as f32;
    let bc2_sqrt = bc2.sqrt() as f32;
    let ps = p.slices_mut();
    let gs = g.slices();
    let ms = m.slices_mut();
    let vs = v.slices_mut();
    for (k, (((pw, gw), mw), vw)) in ps.into_iter().zip(gs).zip(ms).zip(vs).enumerate() {
        let decay = if k == 0 {
            (1.0 - lr * weight_decay) as f32
        } else {
            1.0
        };
        for i in 0..pw.len() {
            let gi = gw[i];
            mw[i] = BETA1 * mw[i] + (1.0 - BETA1) * gi;
            vw[i] = BETA2 * vw[i] + (1.0 - BETA2) * gi * gi;
            let denom = vw[i].sqrt() / bc2_sqrt + EPS;
            pw[i] = pw[i] * decay - step_size * mw[i] / denom;
        }
    }
}

/// Sum of squares of the gradient (f64, fixed order: touched weight rows ascending, then the
/// CRF tensors). Rows not touched this step are zero.
pub fn grad_sq_norm(g: &Params, rows: &[u32]) -> f64 {
    let l = g.n_labels;
    let mut s = 0.0f64;
    for &r in rows {
        for &x in &g.weight[r as usize * l..(r as usize + 1) * l] {
            s += f64::from(x) * f64::from(x);
        }
    }
    for t in [&g.transitions, &g.start, &g.end] {
        for &x in t.iter() {
            s += f64::from(x) * f64::from(x);
        }
    }
    s
}

/// Multiplies the (touched part of the) gradient by `factor`.
pub fn scale_grads(g: &mut Params, rows: &[u32], factor: f32) {
    let l = g.n_labels;
    for &r in rows {
        for x in &mut g.weight[r as usize * l..(r as usize + 1) * l] {
            *x *= factor;
        }
    }
    for t in [&mut g.transitions, &mut g.start, &mut g.end] {
        for x in t.iter_mut() {
            *x *= factor;
        }
    }
}

/// Stores the (scaled) gradient as f16 would: rounds every element through f16. Returns
/// false when any element overflows (inf/NaN) — the step must then be skipped.
pub fn round_grads_f16(g: &mut Params, rows: &[u32]) -> bool {
    let l = g.n_labels;
    let mut finite = true;
    for &r in rows {
        for x in &mut g.weight[r as usize * l..(r as usize + 1) * l] {
            *x = q(*x, true);
            finite &= x.is_finite();
        }
    }
    for t in [&mut g.transitions, &mut g.start, &mut g.end] {
        for x in t.iter_mut() {
            *x = q(*x, true);
            finite &= x.is_finite();
        }
    }
    finite
}

/// Zeroes the gradient buffer (touched rows and CRF tensors) and forgets the touched rows.
pub fn zero_grads(g: &mut Params, touched: &mut Touched) {
    let l = g.n_labels;
    for &r in &touched.rows {
        g.weight[r as usize * l..(r as usize + 1) * l].fill(0.0);
    }
    for t in [&mut g.transitions, &mut g.start, &mut g.end] {
        t.fill(0.0);
    }
    touched.reset();
}

/// Dynamic loss scaler for emulated fp16 (PyTorch GradScaler's policy).
#[derive(Clone, Debug, PartialEq)]
pub struct LossScaler {
    pub enabled: bool,
    pub scale: f32,
    /// Consecutive non-overflowing steps since the last change.
    pub good_steps: u64,
}

pub const INITIAL_SCALE: f32 = 65536.0;
pub const GROWTH_INTERVAL: u64 = 2000;
/// Floor of the scale: below it the scaler stops backing off (steps keep being skipped).
pub const MIN_SCALE: f32 = 1.0 / 16384.0;
/// Ceiling, far below f32::MAX so the scaled loss stays finite.
pub const MAX_SCALE: f32 = 16_777_216.0;

impl LossScaler {
    pub fn new(enabled: bool) -> LossScaler {
        LossScaler {
            enabled,
            scale: if enabled { INITIAL_SCALE } else { 1.0 },
            good_steps: 0,
        }
    }

    /// Records the outcome of one step.
    pub fn update(&mut self, overflow: bool) {
        if !self.enabled {
            return;
        }
        if overflow {
            self.scale = (self.scale * 0.5).max(MIN_SCALE);
            self.good_steps = 0;
        } else {
            self.good_steps += 1;
            if self.good_steps >= GROWTH_INTERVAL {
                self.scale = (self.scale * 2.0).min(MAX_SCALE);
                self.good_steps = 0;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedule_warms_up_then_decays_to_zero() {
        let lr = |s| learning_rate(1.0, s, 4, 10);
        assert_eq!(lr(0), 0.25);
        assert_eq!(lr(3), 1.0);
        assert_eq!(lr(4), 1.0);
        assert!((lr(9) - 1.0 / 6.0).abs() < 1e-12);
        assert_eq!(lr(10), 0.0);
        assert_eq!(learning_rate(1.0, 0, 0, 1), 1.0);
        assert_eq!(learning_rate(1.0, 3, 20, 5), 0.2);
    }

    #[test]
    fn constant_schedule_warms_up_then_ignores_the_total() {
        use crate::protocol::LrScheduler::{Constant, Linear};
        for total in [5, 10, 1000] {
            let lr = |s| scheduled_rate(Constant, 1.0, s, 4, total);
            assert_eq!(
                (lr(0), lr(3), lr(4), lr(9), lr(2000)),
                (0.25, 1.0, 1.0, 1.0, 1.0)
            );
        }
        assert_eq!(
            scheduled_rate(Linear, 1.0, 9, 4, 10),
            learning_rate(1.0, 9, 4, 10)
        );
    }

    #[test]
    fn scaler_backs_off_and_grows() {
        let mut s = LossScaler::new(true);
        s.update(true);
        assert_eq!(s.scale, 32768.0);
        for _ in 0..GROWTH_INTERVAL {
            s.update(false);
        }
        assert_eq!(s.scale, 65536.0);
        assert_eq!(s.good_steps, 0);
        let mut off = LossScaler::new(false);
        off.update(true);
        assert_eq!(off.scale, 1.0);
    }

    #[test]
    fn adamw_first_step_moves_by_lr() {
        let mut p = Params::zeros(2, 2, false);
        p.weight = vec![1.0, 1.0, 0.0, 0.0];
        let mut g = Params::zeros(2, 2, false);
        g.weight = vec![0.5, -2.0, 0.0, 0.0];
        let (mut m, mut v) = (Params::zeros(2, 2, false), Params::zeros(2, 2, false));
        adamw_step(&mut p, &g, &mut m, &mut v, 0.1, 0.0, 1);
        assert!((p.weight[0] - 0.9).abs() < 1e-6);
        assert!((p.weight[1] - 1.1).abs() < 1e-6);
        assert_eq!(p.weight[2], 0.0);
    }
}
