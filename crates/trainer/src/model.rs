//! The model: a hashed linear scorer (one weight row of `n_labels` per feature bucket) with a
//! softmax head or a linear-chain CRF (transitions + start/end scores). Owns forward,
//! backward (into a gradient buffer) and decoding. All arithmetic runs in a fixed order on
//! one thread (f64 for reductions), so the same inputs give the same bits on every run.

use half::f16;

/// One training/eval sequence: the kept (non-truncated) tokens' features and gold labels.
#[derive(Clone, Debug, PartialEq)]
pub struct Example {
    pub feats: super::text::TokenFeatures,
    pub gold: Vec<u16>,
    /// Char offsets of the kept tokens.
    pub tokens: Vec<(usize, usize)>,
    /// Gold entity spans (char offsets, label id) lying wholly inside the kept tokens.
    pub gold_spans: Vec<(usize, usize, u16)>,
}

impl Example {
    pub fn len(&self) -> usize {
        self.gold.len()
    }

    pub fn is_empty(&self) -> bool {
        self.gold.is_empty()
    }
}

/// The parameters (or a same-shaped buffer: gradients, Adam moments). Tensors in a fixed
/// order: weight, transitions, start, end (the last three empty without a CRF).
#[derive(Clone, Debug, PartialEq)]
pub struct Params {
    pub n_labels: usize,
    pub hash_dim: usize,
    pub weight: Vec<f32>,
    pub transitions: Vec<f32>,
    pub start: Vec<f32>,
    pub end: Vec<f32>,
}

/// Tensor names as stored in safetensors files.
pub const TENSOR_NAMES: [&str; 4] = [
    "weight",
    "transitions",
    "start_transitions",
    "end_transitions",
];

impl Params {
    pub fn zeros(hash_dim: usize, n_labels: usize, crf: bool) -> Params {
        let c = if crf { 1 } else { 0 };
        Params {
            n_labels,
            hash_dim,
            weight: vec![0.0; hash_dim * n_labels],
            transitions: vec![0.0; c * n_labels * n_labels],
            start: vec![0.0; c * n_labels],
            end: vec![0.0; c * n_labels],
        }
    }

    pub fn crf(&self) -> bool {
        !self.transitions.is_empty()
    }

    /// (name, shape, data) of every present tensor, in the fixed order.
    pub fn tensors(&self) -> Vec<(&'static str, Vec<usize>, &[f32])> {
        let l = self.n_labels;
        let mut out = vec![(
            TENSOR_NAMES[0],
            vec![self.hash_dim, l],
            self.weight.as_slice(),
        )];
        if self.crf() {
            out.push((TENSOR_NAMES[1], vec![l, l], self.transitions.as_slice()));
            out.push((TENSOR_NAMES[2], vec![l], self.start.as_slice()));
            out.push((TENSOR_NAMES[3], vec![l], self.end.as_slice()));
        }
        out
    }

    pub fn slices_mut(&mut self) -> [&mut [f32]; 4] {
        [
            &mut self.weight,
            &mut self.transitions,
            &mut self.start,
            &mut self.end,
        ]
    }

    pub fn slices(&self) -> [&[f32]; 4] {
        [&self.weight, &self.transitions, &self.start, &self.end]
    }

    pub fn fill_zero(&mut self) {
        for s in self.slices_mut() {
            s.fill(0.0);
        }
    }

    pub fn all_zero(&self) -> bool {
        self.slices().iter().all(|s| s.iter().all(|&x| x == 0.0))
    }
}

/// Rounds through f16 when emulating half precision.
#[inline]
pub fn q(x: f32, half: bool) -> f32 {
    if half {
        f16::from_f32(x).to_f32()
    } else {
        x
    }
}

fn log_sum_exp(xs: &[f64]) -> f64 {
    let m = xs.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    if m == f64::NEG_INFINITY {
        return m;
    }
    m + xs.iter().map(|x| (x - m).exp()).sum::<f64>().ln()
}

/// Per-token feature values: `None` = all features at 1.0 (eval); else one value per
/// feature id of the example (dropout-scaled, 0 = dropped).
pub type Values<'a> = Option<&'a [f32]>;

/// Emission scores `[t][label]` of an example (f16-rounded weights and outputs when `half`).
pub fn emissions(p: &Params, ex: &Example, vals: Values<'_>, half: bool) -> Vec<f32> {
    let l = p.n_labels;
    let n = ex.len();
    let mut out = vec![0.0f32; n * l];
    for t in 0..n {
        let lo = ex.feats.offsets[t];
        let row = &mut out[t * l..(t + 1) * l];
        for (k, &f) in ex.feats.of(t).iter().enumerate() {
            let v = vals.map_or(1.0, |v| v[lo + k]);
            if v == 0.0 {
                continue;
            }
            let w = &p.weight[f as usize * l..(f as usize + 1) * l];
            for (r, &wi) in row.iter_mut().zip(w) {
                *r += v * q(wi, half);
            }
        }
        for r in row.iter_mut() {
            *r = q(*r, half);
        }
    }
    out
}

/// Loss (sum over the example's tokens, natural log) and `d loss / d emission` per token.
/// Softmax: per-token cross-entropy. CRF: the sequence negative log-likelihood.
/// Transition gradients are added into `grads` (scaled by `coef`).
pub fn loss_and_demissions(
    p: &Params,
    em: &[f32],
    gold: &[u16],
    half: bool,
    coef: f64,
    grads: Option<&mut Params>,
) -> (f64, Vec<f64>) {
    let l = p.n_labels;
    let n = gold.len();
    if n == 0 {
        return (0.0, vec![0.0f64; n * l]);
    }
    if !p.crf() {
        return softmax_loss_and_demissions(l, em, gold);
    }
    // Linear-chain CRF, forward-backward in log space.
    let crf = Crf::new(p, em, half, n);
    let alpha = crf.forward();
    let beta = crf.backward();
    let log_z = crf.log_partition(&alpha);
    let loss = log_z - crf.gold_score(gold);
    let mut d = vec![0.0f64; n * l];
    for t in 0..n {
        for k in 0..l {
            let marginal = (alpha[t * l + k] + beta[t * l + k] - log_z).exp();
            d[t * l + k] = marginal - if gold[t] as usize == k { 1.0 } else { 0.0 };
        }
    }
    if let Some(g) = grads {
        let put = |x: f64| q((x * coef) as f32, half);
        let dtr = crf.transition_expectations(&alpha, &beta, log_z, gold);
        for (gt, x) in g.transitions.iter_mut().zip(&dtr) {
            *gt += put(*x);
        }
        for k in 0..l {
            let ds = d[k];
            let de = d[(n - 1) * l + k];
            g.start[k] += put(ds);
            g.end[k] += put(de);
        }
    }
    (loss, d)
}

/// `loss_and_demissions` of the softmax head (`l` labels): per-token cross-entropy of a
/// non-empty example.
fn softmax_loss_and_demissions(l: usize, em: &[f32], gold: &[u16]) -> (f64, Vec<f64>) {
    let n = gold.len();
    let mut d = vec![0.0f64; n * l];
    let mut loss = 0.0f64;
    let mut row = vec![0.0f64; l];
    for t in 0..n {
        for (r, &e) in row.iter_mut().zip(&em[t * l..(t + 1) * l]) {
            *r = f64::from(e);
        }
        let z = log_sum_exp(&row);
        let g = gold[t] as usize;
        loss += z - row[g];
        for k in 0..l {
            d[t * l + k] = (row[k] - z).exp() - if k == g { 1.0 } else { 0.0 };
        }
    }
    (loss, d)
}

/// The linear-chain CRF scores of one non-empty example of `n` tokens, in f64: transitions,
/// start and end scores (f16-rounded when `half`) and the emissions `em`.
struct Crf<'a> {
    l: usize,
    n: usize,
    em: &'a [f32],
    tr: Vec<f64>,
    st: Vec<f64>,
    en: Vec<f64>,
}

impl<'a> Crf<'a> {
    /// The scores of `p` for an example of `n` tokens with emissions `em`.
    fn new(p: &Params, em: &'a [f32], half: bool, n: usize) -> Crf<'a> {
        let tr: Vec<f64> = p
            .transitions
            .iter()
            .map(|&x| f64::from(q(x, half)))
            .collect();
        let st: Vec<f64> = p.start.iter().map(|&x| f64::from(q(x, half))).collect();
        let en: Vec<f64> = p.end.iter().map(|&x| f64::from(q(x, half))).collect();
        Crf {
            l: p.n_labels,
            n,
            em,
            tr,
            st,
            en,
        }
    }

    /// The emission score of label `k` at token `t`.
    fn e(&self, t: usize, k: usize) -> f64 {
        f64::from(self.em[t * self.l + k])
    }

    /// Forward log-scores `alpha[t][k]`: all label paths of tokens `0..=t` ending in `k`.
    fn forward(&self) -> Vec<f64> {
        let (l, n, tr, st) = (self.l, self.n, &self.tr, &self.st);
        let mut alpha = vec![0.0f64; n * l];
        let mut tmp = vec![0.0f64; l];
        for k in 0..l {
            alpha[k] = st[k] + self.e(0, k);
        }
        for t in 1..n {
            for j in 0..l {
                for i in 0..l {
                    tmp[i] = alpha[(t - 1) * l + i] + tr[i * l + j];
                }
                alpha[t * l + j] = log_sum_exp(&tmp) + self.e(t, j);
            }
        }
        alpha
    }

    /// Backward log-scores `beta[t][i]`: all label paths of tokens `t+1..n` after `i` at `t`.
    fn backward(&self) -> Vec<f64> {
        let (l, n, tr) = (self.l, self.n, &self.tr);
        let mut beta = vec![0.0f64; n * l];
        let mut tmp = vec![0.0f64; l];
        for k in 0..l {
            beta[(n - 1) * l + k] = self.en[k];
        }
        for t in (0..n - 1).rev() {
            for i in 0..l {
                for j in 0..l {
                    tmp[j] = tr[i * l + j] + self.e(t + 1, j) + beta[(t + 1) * l + j];
                }
                beta[t * l + i] = log_sum_exp(&tmp);
            }
        }
        beta
    }

    /// The log partition function, from the forward scores.
    fn log_partition(&self, alpha: &[f64]) -> f64 {
        let (l, n) = (self.l, self.n);
        let mut tmp = vec![0.0f64; l];
        for k in 0..l {
            tmp[k] = alpha[(n - 1) * l + k] + self.en[k];
        }
        log_sum_exp(&tmp)
    }

    /// The score of the gold label path.
    fn gold_score(&self, gold: &[u16]) -> f64 {
        let (l, n, tr) = (self.l, self.n, &self.tr);
        let mut gold_score = self.st[gold[0] as usize] + self.en[gold[n - 1] as usize];
        for t in 0..n {
            gold_score += self.e(t, gold[t] as usize);
            if t > 0 {
                gold_score += tr[gold[t - 1] as usize * l + gold[t] as usize];
            }
        }
        gold_score
    }

    /// `d loss / d transitions` (unscaled): expected transition counts minus the gold ones.
    fn transition_expectations(
        &self,
        alpha: &[f64],
        beta: &[f64],
        log_z: f64,
        gold: &[u16],
    ) -> Vec<f64> {
        let (l, n, tr) = (self.l, self.n, &self.tr);
        let mut dtr = vec![0.0f64; l * l];
        for t in 1..n {
            for i in 0..l {
                for j in 0..l {
                    dtr[i * l + j] +=
                        (alpha[(t - 1) * l + i] + tr[i * l + j] + self.e(t, j) + beta[t * l + j]
                            - log_z)
                            .exp();
                }
            }
            dtr[gold[t - 1] as usize * l + gold[t] as usize] -= 1.0;
        }
        dtr
    }
}

/// Adds `coef · d loss/d weight` of one example into `grads.weight` (marking touched rows).
pub fn backward_weights(
    ex: &Example,
    vals: Values<'_>,
    demissions: &[f64],
    coef: f64,
    half: bool,
    grads: &mut Params,
    touched: &mut Touched,
) {
    let l = grads.n_labels;
    let mut drow = vec![0.0f32; l];
    for t in 0..ex.len() {
        for k in 0..l {
            // The upstream gradient is a half tensor under fp16 (scaled by the loss scale).
            drow[k] = q((demissions[t * l + k] * coef) as f32, half);
        }
        let lo = ex.feats.offsets[t];
        for (k, &f) in ex.feats.of(t).iter().enumerate() {
            let v = vals.map_or(1.0, |v| v[lo + k]);
            if v == 0.0 {
                continue;
            }
            touched.mark(f);
            let g = &mut grads.weight[f as usize * l..(f as usize + 1) * l];
            for (gi, &di) in g.iter_mut().zip(&drow) {
                *gi += v * di;
            }
        }
    }
}

/// Rows of the weight gradient that may be non-zero this step.
#[derive(Clone, Debug)]
pub struct Touched {
    pub seen: Vec<bool>,
    pub rows: Vec<u32>,
}

impl Touched {
    pub fn new(hash_dim: usize) -> Touched {
        Touched {
            seen: vec![false; hash_dim],
            rows: Vec::new(),
        }
    }

    #[inline]
    pub fn mark(&mut self, f: u32) {
        if !self.seen[f as usize] {
            self.seen[f as usize] = true;
            self.rows.push(f);
        }
    }

    /// Sorted rows (a canonical order for reductions), then cleared by `reset`.
    pub fn sorted(&mut self) -> &[u32] {
        self.rows.sort_unstable();
        &self.rows
    }

    pub fn reset(&mut self) {
        for &f in &self.rows {
            self.seen[f as usize] = false;
        }
        self.rows.clear();
    }
}

/// Best label per token: argmax (softmax) or Viterbi (CRF). Ties go to the lower label id.
pub fn decode(p: &Params, em: &[f32], n: usize, half: bool) -> Vec<u16> {
    let l = p.n_labels;
    if n == 0 {
        return Vec::new();
    }
    if !p.crf() {
        return (0..n)
            .map(|t| {
                let row = &em[t * l..(t + 1) * l];
                let mut best = 0;
                for k in 1..l {
                    if row[k] > row[best] {
                        best = k;
                    }
                }
                best as u16
            })
            .collect();
    }
    let tr: Vec<f64> = p
        .transitions
        .iter()
        .map(|&x| f64::from(q(x, half)))
        .collect();
    let mut score: Vec<f64> = (0..l)
        .map(|k| f64::from(q(p.start[k], half)) + f64::from(em[k]))
        .collect();
    let mut back = vec![0u16; n * l];
    let mut next = vec![0.0f64; l];
    for t in 1..n {
        for j in 0..l {
            let mut bi = 0;
            let mut bs = score[0] + tr[j];
            for i in 1..l {
                let s = score[i] + tr[i * l + j];
                if s > bs {
                    bs = s;
                    bi = i;
                }
            }
            next[j] = bs + f64::from(em[t * l + j]);
            back[t * l + j] = bi as u16;
        }
        std::mem::swap(&mut score, &mut next);
    }
    let mut best = 0;
    let mut bs = f64::NEG_INFINITY;
    for (k, (&sc, &en)) in score.iter().zip(&p.end).enumerate() {
        let s = sc + f64::from(q(en, half));
        if s > bs {
            bs = s;
            best = k;
        }
    }
    let mut out = vec![0u16; n];
    out[n - 1] = best as u16;
    for t in (1..n).rev() {
        out[t - 1] = back[t * l + out[t] as usize];
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::text::TokenFeatures;

    fn example(n: usize, feats_per: usize, l: u16) -> Example {
        let mut ids = Vec::new();
        let mut offsets = vec![0];
        for t in 0..n {
            for k in 0..feats_per {
                ids.push(((t * 7 + k * 3) % 20) as u32);
            }
            offsets.push(ids.len());
        }
        Example {
            feats: TokenFeatures { ids, offsets },
            gold: (0..n).map(|t| (t as u16 * 5 + 1) % l).collect(),
            tokens: (0..n).map(|t| (t, t + 1)).collect(),
            gold_spans: vec![],
        }
    }

    fn params(crf: bool) -> Params {
        let mut p = Params::zeros(20, 3, crf);
        let mut s = 1u64;
        for x in p.slices_mut().into_iter().flat_map(|s| s.iter_mut()) {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            *x = ((s >> 40) as f32 / (1u64 << 24) as f32) - 0.5;
        }
        p
    }

    fn total_loss(p: &Params, ex: &Example) -> f64 {
        let em = emissions(p, ex, None, false);
        loss_and_demissions(p, &em, &ex.gold, false, 1.0, None).0
    }

    /// Finite differences agree with the analytic gradient (softmax and CRF).
    #[test]
    fn gradients_match_finite_differences() {
        for crf in [false, true] {
            let p = params(crf);
            let ex = example(5, 3, 3);
            let mut g = Params::zeros(20, 3, crf);
            let mut touched = Touched::new(20);
            let em = emissions(&p, &ex, None, false);
            let (_, d) = loss_and_demissions(&p, &em, &ex.gold, false, 1.0, Some(&mut g));
            backward_weights(&ex, None, &d, 1.0, false, &mut g, &mut touched);
            for which in 0..4 {
                let n = p.slices()[which].len();
                for i in (0..n).step_by(3) {
                    let h = 1e-2f32;
                    let mut a = p.clone();
                    a.slices_mut()[which][i] += h;
                    let mut b = p.clone();
                    b.slices_mut()[which][i] -= h;
                    let num = (total_loss(&a, &ex) - total_loss(&b, &ex)) / (2.0 * f64::from(h));
                    let ana = f64::from(g.slices()[which][i]);
                    assert!(
                        (num - ana).abs() < 2e-3,
                        "crf={crf} tensor {which}[{i}]: {num} vs {ana}"
                    );
                }
            }
        }
    }

    #[test]
    fn viterbi_beats_every_other_path() {
        let p = params(true);
        let ex = example(4, 2, 3);
        let em = emissions(&p, &ex, None, false);
        let best = decode(&p, &em, 4, false);
        let score = |y: &[u16]| {
            let l = 3;
            let mut s = f64::from(p.start[y[0] as usize]) + f64::from(p.end[y[3] as usize]);
            for t in 0..4 {
                s += f64::from(em[t * l + y[t] as usize]);
                if t > 0 {
                    s += f64::from(p.transitions[y[t - 1] as usize * l + y[t] as usize]);
                }
            }
            s
        };
        let bs = score(&best);
        for code in 0..81u32 {
            let y: Vec<u16> = (0..4).map(|t| ((code / 3u32.pow(t)) % 3) as u16).collect();
            assert!(score(&y) <= bs + 1e-9);
        }
    }
}
