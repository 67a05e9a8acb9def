//! The dot product behind every similarity in cellspace: HNSW distances, exact search, kNN
//! metrics, near-duplicate groups. It is most of a search's time, and an in-order float sum
//! cannot be vectorised by the compiler, so x86-64 machines with AVX-512 or AVX2 and FMA
//! (checked at run time, so one binary runs everywhere) use several FMA accumulators;
//! elsewhere eight independent accumulators let the compiler vectorise.

/// Dot product of two equally long vectors (extra elements of the longer one are ignored).
#[inline]
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx512f") {
        // SAFETY: the CPU supports AVX-512F (checked above).
        return unsafe { dot_avx512(a, b) };
    }
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma") {
        // SAFETY: the CPU supports the features `dot_avx2` is compiled for (checked above).
        return unsafe { dot_avx2(a, b) };
    }
    dot_portable(a, b)
}

/// Dot products of `q` with four rows at once: `q` is read once for all four, and four
/// independent streams of rows keep more memory requests in flight (an exact search over a
/// gallery is bound by memory bandwidth, not arithmetic).
#[inline]
pub fn dot4(q: &[f32], rows: [&[f32]; 4]) -> [f32; 4] {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx512f") && rows.iter().all(|r| r.len() >= q.len()) {
        // SAFETY: AVX-512F is present (checked) and every row is at least as long as `q`.
        return unsafe { dot4_avx512(q, rows) };
    }
    rows.map(|r| dot(q, r))
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn dot4_avx512(q: &[f32], rows: [&[f32]; 4]) -> [f32; 4] {
    use std::arch::x86_64::*;
    let n = q.len();
    let mut i = 0;
    // SAFETY: loads read 16 floats at i + 16 <= n of `q` and of rows at least n long.
    unsafe {
        let mut s = [_mm512_setzero_ps(); 4];
        while i + 16 <= n {
            let x = _mm512_loadu_ps(q.as_ptr().add(i));
            for (sj, r) in s.iter_mut().zip(rows) {
                *sj = _mm512_fmadd_ps(x, _mm512_loadu_ps(r.as_ptr().add(i)), *sj);
            }
            i += 16;
        }
        let mut out = s.map(|v| _mm512_reduce_add_ps(v));
        while i < n {
            for (o, r) in out.iter_mut().zip(rows) {
                *o += q[i] * r[i];
            }
            i += 1;
        }
        out
    }
}

/// Dot product of f32 `a` with int8 codes `b` (each code taken as its value).
#[inline]
pub fn dot_i8(a: &[f32], b: &[i8]) -> f32 {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx512f") {
        // SAFETY: the CPU supports AVX-512F (checked above).
        return unsafe { dot_i8_avx512(a, b) };
    }
    a.iter().zip(b).map(|(x, &c)| x * c as f32).sum()
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn dot_i8_avx512(a: &[f32], b: &[i8]) -> f32 {
    use std::arch::x86_64::*;
    let n = a.len().min(b.len());
    let mut i = 0;
    // SAFETY: loads read 16 floats / 16 bytes at i + 16 <= n of both slices.
    unsafe {
        let mut s = _mm512_setzero_ps();
        while i + 16 <= n {
            let codes = _mm_loadu_si128(b.as_ptr().add(i).cast());
            let c = _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(codes));
            s = _mm512_fmadd_ps(_mm512_loadu_ps(a.as_ptr().add(i)), c, s);
            i += 16;
        }
        let mut sum = _mm512_reduce_add_ps(s);
        while i < n {
            sum += a[i] * b[i] as f32;
            i += 1;
        }
        sum
    }
}

/// Eight independent sums (vectorisable on any target), then the tail.
pub fn dot_portable(a: &[f32], b: &[f32]) -> f32 {
    let n = a.len().min(b.len());
    let (a, b) = (&a[..n], &b[..n]);
    let mut acc = [0f32; 8];
    let (ca, cb) = (a.chunks_exact(8), b.chunks_exact(8));
    let tail: f32 = ca
        .remainder()
        .iter()
        .zip(cb.remainder())
        .map(|(x, y)| x * y)
        .sum();
    for (x, y) in ca.zip(cb) {
        for j in 0..8 {
            acc[j] += x[j] * y[j];
        }
    }
    acc.iter().sum::<f32>() + tail
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn dot_avx2(a: &[f32], b: &[f32]) -> f32 {
    use std::arch::x86_64::*;
    let n = a.len().min(b.len());
    let (pa, pb) = (a.as_ptr(), b.as_ptr());
    let mut i = 0;
    // SAFETY: every load reads 8 floats at i < i + 8 <= n of both slices.
    unsafe {
        let mut s = [_mm256_setzero_ps(); 4];
        while i + 32 <= n {
            for (j, sj) in s.iter_mut().enumerate() {
                let o = i + 8 * j;
                *sj = _mm256_fmadd_ps(_mm256_loadu_ps(pa.add(o)), _mm256_loadu_ps(pb.add(o)), *sj);
            }
            i += 32;
        }
        while i + 8 <= n {
            s[0] = _mm256_fmadd_ps(_mm256_loadu_ps(pa.add(i)), _mm256_loadu_ps(pb.add(i)), s[0]);
            i += 8;
        }
        let v = _mm256_add_ps(_mm256_add_ps(s[0], s[1]), _mm256_add_ps(s[2], s[3]));
        let half = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
        let pair = _mm_add_ps(half, _mm_movehl_ps(half, half));
        let one = _mm_add_ss(pair, _mm_shuffle_ps(pair, pair, 1));
        let mut sum = _mm_cvtss_f32(one);
        while i < n {
            sum += *pa.add(i) * *pb.add(i);
            i += 1;
        }
        sum
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn dot_avx512(a: &[f32], b: &[f32]) -> f32 {
    use std::arch::x86_64::*;
    let n = a.len().min(b.len());
    let (pa, pb) = (a.as_ptr(), b.as_ptr());
    let mut i = 0;
    // SAFETY: every load reads 16 floats at i < i + 16 <= n of both slices.
    unsafe {
        let (mut s0, mut s1) = (_mm512_setzero_ps(), _mm512_setzero_ps());
        while i + 32 <= n {
            s0 = _mm512_fmadd_ps(_mm512_loadu_ps(pa.add(i)), _mm512_loadu_ps(pb.add(i)), s0);
            s1 = _mm512_fmadd_ps(
                _mm512_loadu_ps(pa.add(i + 16)),
                _mm512_loadu_ps(pb.add(i + 16)),
                s1,
            );
            i += 32;
        }
        if i + 16 <= n {
            s0 = _mm512_fmadd_ps(_mm512_loadu_ps(pa.add(i)), _mm512_loadu_ps(pb.add(i)), s0);
            i += 16;
        }
        let mut sum = _mm512_reduce_add_ps(_mm512_add_ps(s0, s1));
        while i < n {
            sum += *pa.add(i) * *pb.add(i);
            i += 1;
        }
        sum
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn numbers() -> impl FnMut() -> f32 {
        let mut x = 0.37f32;
        move || {
            x = (x * 3.7 + 0.11).fract();
            x - 0.5
        }
    }

    #[test]
    fn every_kernel_matches_the_plain_sum() {
        let mut next = numbers();
        for n in (0..70).chain([127, 128, 129, 640, 1000]) {
            let a: Vec<f32> = (0..n).map(|_| next()).collect();
            let b: Vec<f32> = (0..n).map(|_| next()).collect();
            let plain: f64 = a
                .iter()
                .zip(&b)
                .map(|(x, y)| (*x as f64) * (*y as f64))
                .sum();
            let mut kernels = vec![
                ("dispatch", dot(&a, &b)),
                ("portable", dot_portable(&a, &b)),
            ];
            #[cfg(target_arch = "x86_64")]
            if std::arch::is_x86_feature_detected!("avx2")
                && std::arch::is_x86_feature_detected!("fma")
            {
                // SAFETY: the features were checked just above
                kernels.push(("avx2", unsafe { dot_avx2(&a, &b) }));
            }
            for (name, got) in kernels {
                assert!(
                    (got as f64 - plain).abs() < 1e-4,
                    "{name}, n {n}: {got} vs {plain}"
                );
            }
        }
        assert_eq!(
            dot(&[1.0, 2.0, 3.0], &[4.0, 5.0]),
            14.0,
            "extra elements ignored"
        );
    }

    #[test]
    fn four_rows_and_int8_codes_match_the_plain_sums() {
        let mut next = numbers();
        for n in [0, 5, 16, 37, 640] {
            let rows: Vec<Vec<f32>> = (0..5).map(|_| (0..n).map(|_| next()).collect()).collect();
            let got = dot4(&rows[4], [&rows[0], &rows[1], &rows[2], &rows[3]]);
            for j in 0..4 {
                let want = dot(&rows[4], &rows[j]);
                assert!((got[j] - want).abs() < 1e-4, "dot4, n {n}, row {j}");
            }
            let codes: Vec<i8> = (0..n).map(|_| (next() * 250.0) as i8).collect();
            let plain: f32 = rows[0].iter().zip(&codes).map(|(x, &c)| x * c as f32).sum();
            let got = dot_i8(&rows[0], &codes);
            assert!((got - plain).abs() < 1e-3, "int8, n {n}: {got} vs {plain}");
        }
    }
}
