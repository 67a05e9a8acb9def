//! The self-supervised objectives, each a `Config` and a module in its own file (burn's loss
//! style) that implements [`SelfSupervisedLoss`]: [`triplet`], [`ntxent`] and the
//! non-contrastive [`vicreg`]. Each takes the L2-normalised embeddings of two augmented views
//! of the same N images, `z1[i]` and `z2[i]`: row `i` of both is the positive pair; the
//! contrastive losses take every row of another image as a negative, VICReg takes none.
//!
//! A new loss is a file here (its `Config`, its module and its [`SelfSupervisedLoss`]) and
//! one line in the `losses!` list below, which declares its module and makes its [`LossKind`]
//! variant (`--loss NAME`, the name in configs and cards) and its [`Objective`]. (`cargo fmt`
//! does not follow a module declared by a macro: `scripts/test.sh` checks these files'
//! formatting by name.)

pub use ntxent::{NtXentLoss, NtXentLossConfig, nt_xent};
pub use triplet::{TripletLoss, TripletLossConfig, triplet_batch_hard};
pub use vicreg::{VicRegLoss, VicRegLossConfig};

use crate::model::EmbeddingOutput;

use burn::prelude::*;

/// The run's loss flags; each loss takes the ones it has.
#[derive(Debug, Clone, Copy)]
pub struct LossParams {
    pub margin: f32,
    pub fn_threshold: f32,
    pub temperature: f32,
    pub debias: f32,
}

/// One self-supervised objective as the training step applies it.
pub trait SelfSupervisedLoss: std::fmt::Debug + Clone {
    /// Its `--loss` value, and its name in configs and model cards.
    const NAME: &'static str;
    /// The encoder output it trains.
    const TRAINS: EmbeddingOutput;
    /// The loss with the run's parameters.
    fn from_params(p: &LossParams) -> Self;
    /// # Shapes
    /// - `z1`, `z2`: `[N, D]`, L2-normalised, row `i` of both the same image
    /// - output: `[1]`
    fn loss(&self, z1: Tensor<2>, z2: Tensor<2>) -> Tensor<1>;
}

/// The registry: `Variant => module::Loss` per line declares `module` (the file beside this
/// one) and makes [`LossKind`] (the choice, by name) and [`Objective`] (the configured loss)
/// with every dispatch between them.
macro_rules! losses {
    ($($(#[$doc:meta])* $variant:ident => $module:ident :: $loss:ident,)+) => {
        $(pub mod $module;)+

        /// Which loss trains the encoder.
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        pub enum LossKind {
            $($(#[$doc])* $variant,)+
        }

        impl LossKind {
            /// Every loss, in the registry's order.
            pub const ALL: &'static [LossKind] = &[$(LossKind::$variant),+];

            /// Its `--loss` value and its name in configs.
            pub fn name(self) -> &'static str {
                match self {
                    $(LossKind::$variant => <$module::$loss as SelfSupervisedLoss>::NAME,)+
                }
            }

            /// The encoder output the loss trains: NT-Xent the projection head (SimCLR's),
            /// triplet the backbone embedding (it has no head).
            pub fn trains(self) -> EmbeddingOutput {
                match self {
                    $(LossKind::$variant => <$module::$loss as SelfSupervisedLoss>::TRAINS,)+
                }
            }
        }

        /// The configured loss of a run, ready to apply to a batch's two views.
        #[derive(Debug, Clone)]
        pub enum Objective {
            $($variant($module::$loss),)+
        }

        impl Objective {
            /// The `kind` of loss with the run's parameters (the others are ignored).
            pub fn new(kind: LossKind, params: &LossParams) -> Self {
                match kind {
                    $(LossKind::$variant => {
                        Objective::$variant(<$module::$loss as SelfSupervisedLoss>::from_params(params))
                    })+
                }
            }

            /// The loss of the two views' embeddings. `z1`, `z2`: `[N, D]` -> `[1]`.
            pub fn forward(&self, z1: Tensor<2>, z2: Tensor<2>) -> Tensor<1> {
                match self {
                    $(Objective::$variant(l) => l.loss(z1, z2),)+
                }
            }
        }
    };
}

losses! {
    /// Triplet loss with batch-hard negative mining.
    Triplet => triplet::TripletLoss,
    /// NT-Xent (SimCLR) contrastive loss.
    Ntxent => ntxent::NtXentLoss,
    /// VICReg: invariance, variance and covariance terms; no negatives.
    Vicreg => vicreg::VicRegLoss,
}

impl std::str::FromStr for LossKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        LossKind::ALL
            .iter()
            .copied()
            .find(|k| k.name() == s)
            .ok_or_else(|| {
                let names: Vec<&str> = LossKind::ALL.iter().map(|k| k.name()).collect();
                format!("unknown loss `{s}` (one of: {})", names.join(", "))
            })
    }
}

impl serde::Serialize for LossKind {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.name())
    }
}

impl<'de> serde::Deserialize<'de> for LossKind {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let name = String::deserialize(d)?;
        name.parse().map_err(serde::de::Error::custom)
    }
}

/// A value added to masked similarities / subtracted from masked logits: far outside [-1, 1].
const MASK: f32 = 1.0e4;

/// Stack both views: [N, D] x 2 -> [2N, D]; returns the similarity matrix [2N, 2N] and
/// a mask that is true on pairs of the same image (self and the positive).
pub(crate) fn pair_setup(z1: Tensor<2>, z2: Tensor<2>) -> (Tensor<2>, Tensor<2>, Tensor<2, Bool>) {
    let [n, _] = z1.dims();
    let device = z1.device();
    let z = Tensor::cat(vec![z1, z2], 0); // [2N, D]
    let sim = z.clone().matmul(z.clone().transpose()); // [2N, 2N]
    let ids: Vec<i64> = (0..2 * n as i64).map(|i| i % n as i64).collect();
    let a = Tensor::<1, Int>::from_data(TensorData::new(ids.clone(), [2 * n]), &device);
    let rows = a.clone().reshape([2 * n, 1]).repeat(&[1, 2 * n]); // [2N, 2N]
    let cols = a.reshape([1, 2 * n]).repeat(&[2 * n, 1]); // [2N, 2N]
    let same = rows.equal(cols);
    (z, sim, same)
}

/// Index of the positive partner of each of the 2N rows.
pub(crate) fn positive_index(n: usize, device: &Device) -> Tensor<2, Int> {
    let idx: Vec<i64> = (0..2 * n).map(|i| ((i + n) % (2 * n)) as i64).collect();
    Tensor::<1, Int>::from_data(TensorData::new(idx, [2 * n]), device).reshape([2 * n, 1])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_registered_loss_is_found_by_its_name_and_keeps_it_in_configs() {
        let names: Vec<&str> = LossKind::ALL.iter().map(|k| k.name()).collect();
        assert_eq!(names, ["triplet", "ntxent", "vicreg"]);
        for &k in LossKind::ALL {
            assert_eq!(k.name().parse::<LossKind>().unwrap(), k);
            let json = serde_json::to_string(&k).unwrap();
            assert_eq!(json, format!("\"{}\"", k.name()));
            assert_eq!(serde_json::from_str::<LossKind>(&json).unwrap(), k);
        }
        assert_eq!(LossKind::Ntxent.trains(), EmbeddingOutput::Head);
        assert_eq!(LossKind::Triplet.trains(), EmbeddingOutput::Backbone);
        let err = "byol".parse::<LossKind>().unwrap_err();
        assert!(err.contains("triplet, ntxent, vicreg"), "{err}");
        assert!(serde_json::from_str::<LossKind>("\"byol\"").is_err());
    }

    fn t(rows: &[[f32; 2]]) -> Tensor<2> {
        let flat: Vec<f32> = rows.iter().flatten().copied().collect();
        let x = Tensor::<2>::from_data(TensorData::new(flat, [rows.len(), 2]), &Device::flex());
        crate::model::l2_normalize(x)
    }

    fn unit(deg: f32) -> [f32; 2] {
        let r = deg.to_radians();
        [r.cos(), r.sin()]
    }

    fn scalar(x: Tensor<1>) -> f32 {
        x.into_scalar::<f32>()
    }

    #[test]
    fn triplet_picks_closest_other_image_and_matches_hand_value() {
        // image 0 views at 0° and 10°, image 1 at 30° and 90°, image 2 at 180° and 175°
        let z1 = t(&[unit(0.0), unit(30.0), unit(180.0)]);
        let z2 = t(&[unit(10.0), unit(90.0), unit(175.0)]);
        let (loss, hard) = triplet_batch_hard(z1, z2, 0.2, 1.0);
        let hard: Vec<i64> = hard.into_data().convert::<i64>().try_to_vec().unwrap();
        // rows: 0:0°, 1:30°, 2:180°, 3:10°, 4:90°, 5:175°
        assert_eq!(hard, vec![1, 3, 4, 1, 3, 4]);
        let d = |a: f32, b: f32| (2.0 - 2.0 * (a - b).to_radians().cos()).sqrt();
        let terms = [
            (d(0.0, 10.0) - d(0.0, 30.0) + 0.2).max(0.0),
            (d(30.0, 90.0) - d(30.0, 10.0) + 0.2).max(0.0),
            (d(180.0, 175.0) - d(180.0, 90.0) + 0.2).max(0.0),
            (d(10.0, 0.0) - d(10.0, 30.0) + 0.2).max(0.0),
            (d(90.0, 30.0) - d(90.0, 10.0) + 0.2).max(0.0),
            (d(175.0, 180.0) - d(175.0, 90.0) + 0.2).max(0.0),
        ];
        let expect = terms.iter().sum::<f32>() / 6.0;
        assert!((scalar(loss) - expect).abs() < 1e-4);
    }

    #[test]
    fn ntxent_matches_hand_value_without_self_similarity() {
        let z1 = t(&[unit(0.0), unit(100.0)]);
        let z2 = t(&[unit(20.0), unit(130.0)]);
        let tau = 0.5;
        let loss = scalar(nt_xent(z1, z2, tau, 0.0));
        let a = [0.0f32, 100.0, 20.0, 130.0];
        let cos = |i: usize, j: usize| (a[i] - a[j]).to_radians().cos();
        let mut expect = 0.0;
        for i in 0..4 {
            let p = (i + 2) % 4;
            let denom: f32 = (0..4)
                .filter(|&j| j != i)
                .map(|j| (cos(i, j) / tau).exp())
                .sum();
            expect += -((cos(i, p) / tau).exp() / denom).ln();
        }
        expect /= 4.0;
        assert!((loss - expect).abs() < 1e-4, "{loss} vs {expect}");
    }

    #[test]
    fn debiased_ntxent_is_lower_when_negatives_look_alike() {
        let z1 = t(&[unit(0.0), unit(5.0), unit(90.0)]);
        let z2 = t(&[unit(2.0), unit(7.0), unit(92.0)]);
        let plain = scalar(nt_xent(z1.clone(), z2.clone(), 0.5, 0.0));
        let debiased = scalar(nt_xent(z1, z2, 0.5, 0.25));
        assert!(debiased < plain, "{debiased} < {plain}");
    }
}
