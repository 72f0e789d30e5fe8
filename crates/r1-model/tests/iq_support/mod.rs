//! Checks shared by the i-quant kernel tests (`quant_iq.rs`, `quant_iq_x16.rs`).

/// `out[r * n + t]` (n tokens) is within a few f32 ulps of the sum of |products| of the f64
/// dot of weight row `r` (`wdq`, rows of `k`) and activation `t` (`adq`).
pub fn assert_near_exact_dot(what: &str, k: usize, wdq: &[f32], adq: &[f32], out: &[f32]) {
    let (m, n) = (wdq.len() / k, adq.len() / k);
    for r in 0..m {
        for t in 0..n {
            let (x, y) = (&wdq[r * k..(r + 1) * k], &adq[t * k..(t + 1) * k]);
            let exact: f64 = x.iter().zip(y).map(|(&p, &q)| p as f64 * q as f64).sum();
            let mag: f64 = x
                .iter()
                .zip(y)
                .map(|(&p, &q)| (p as f64 * q as f64).abs())
                .sum();
            let got = out[r * n + t] as f64;
            assert!(
                (got - exact).abs() <= 2e-6 * mag + 1e-30,
                "{what} row {r} token {t}: {got} vs {exact} (mag {mag})"
            );
        }
    }
}
