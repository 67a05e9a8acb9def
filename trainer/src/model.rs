//! The encoder: a small ResNet (torchvision's layout and parameter names, so `--init` can load
//! torchvision ResNet weights) whose global-average-pooled features go through a linear layer to
//! an L2-normalised embedding. NT-Xent may train through an extra projection head; retrieval
//! uses [`Encoder::embed`] or [`Encoder::project`], as the run's configuration says or as a
//! `trainer cv` table chose at export (the best mean kNN-200 on the other folds).

use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::pool::{AdaptiveAvgPool2d, AdaptiveAvgPool2dConfig, MaxPool2d, MaxPool2dConfig};
use burn::nn::{BatchNorm, BatchNormConfig, Linear, LinearConfig, PaddingConfig2d};
use burn::prelude::*;
use burn::tensor::activation::relu;

/// Named encoder presets.
/// An encoder preset (`--arch`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arch {
    /// The small CPU ResNet the shipped model uses.
    Small,
    /// torchvision's ResNet-18 layout (for `--init` with its weights).
    Resnet18,
}

impl std::str::FromStr for Arch {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "small" => Ok(Arch::Small),
            "resnet18" => Ok(Arch::Resnet18),
            other => Err(format!(
                "unknown arch {other:?}; expected small or resnet18"
            )),
        }
    }
}

#[derive(Config, Debug, PartialEq)]
pub struct EncoderConfig {
    /// Channels of the four stages.
    #[config(default = "[32, 64, 128, 256]")]
    pub widths: [usize; 4],
    /// Basic blocks per stage.
    #[config(default = "[1, 1, 1, 1]")]
    pub blocks: [usize; 4],
    /// Stem: 3x3 stride 2 (`false`) or torchvision's 7x7 stride 2 + max-pool (`true`).
    #[config(default = false)]
    pub imagenet_stem: bool,
    /// Embedding dimension.
    #[config(default = 128)]
    pub dim: usize,
    /// Projection head output dimension (0 = no head).
    #[config(default = 0)]
    pub head_dim: usize,
}

impl EncoderConfig {
    /// ~1.2 M parameters, sized for CPU training at 64-96 px.
    pub fn small() -> Self {
        Self::new()
    }
    /// torchvision's ResNet-18 (11 M parameters), for `--init` with ImageNet weights.
    pub fn resnet18() -> Self {
        Self::new()
            .with_widths([64, 128, 256, 512])
            .with_blocks([2, 2, 2, 2])
            .with_imagenet_stem(true)
    }
    pub fn preset(arch: Arch) -> Self {
        match arch {
            Arch::Small => Self::small(),
            Arch::Resnet18 => Self::resnet18(),
        }
    }

    pub fn init(&self, device: &Device) -> Encoder {
        let w = self.widths;
        let (conv1, maxpool) = if self.imagenet_stem {
            (
                conv(3, w[0], 7, 2, 3, device),
                Some(
                    MaxPool2dConfig::new([3, 3])
                        .with_strides([2, 2])
                        .with_padding(PaddingConfig2d::Explicit(1, 1, 1, 1))
                        .init(),
                ),
            )
        } else {
            (conv(3, w[0], 3, 2, 1, device), None)
        };
        let stage = |i: usize, cin: usize| -> Vec<BasicBlock> {
            let stride = if i == 0 { 1 } else { 2 };
            (0..self.blocks[i])
                .map(|b| {
                    if b == 0 {
                        BasicBlock::new(cin, w[i], stride, device)
                    } else {
                        BasicBlock::new(w[i], w[i], 1, device)
                    }
                })
                .collect()
        };
        Encoder {
            conv1,
            bn1: BatchNormConfig::new(w[0]).init(device),
            maxpool,
            layer1: stage(0, w[0]),
            layer2: stage(1, w[0]),
            layer3: stage(2, w[1]),
            layer4: stage(3, w[2]),
            avgpool: AdaptiveAvgPool2dConfig::new([1, 1]).init(),
            fc: LinearConfig::new(w[3], self.dim).init(device),
            head: (self.head_dim > 0).then(|| ProjectionHead {
                hidden: LinearConfig::new(self.dim, self.dim).init(device),
                out: LinearConfig::new(self.dim, self.head_dim).init(device),
            }),
        }
    }
}

fn conv(cin: usize, cout: usize, k: usize, stride: usize, pad: usize, device: &Device) -> Conv2d {
    Conv2dConfig::new([cin, cout], [k, k])
        .with_stride([stride, stride])
        .with_padding(PaddingConfig2d::Explicit(pad, pad, pad, pad))
        .with_bias(false)
        .init(device)
}

/// torchvision's `downsample`: 1x1 strided conv + batch norm on the shortcut.
#[derive(Module, Debug)]
pub struct Downsample {
    pub conv: Conv2d,
    pub bn: BatchNorm,
}

#[derive(Module, Debug)]
pub struct BasicBlock {
    pub conv1: Conv2d,
    pub bn1: BatchNorm,
    pub conv2: Conv2d,
    pub bn2: BatchNorm,
    pub downsample: Option<Downsample>,
}

impl BasicBlock {
    pub fn new(cin: usize, cout: usize, stride: usize, device: &Device) -> Self {
        Self {
            conv1: conv(cin, cout, 3, stride, 1, device),
            bn1: BatchNormConfig::new(cout).init(device),
            conv2: conv(cout, cout, 3, 1, 1, device),
            bn2: BatchNormConfig::new(cout).init(device),
            downsample: (stride != 1 || cin != cout).then(|| Downsample {
                conv: conv(cin, cout, 1, stride, 0, device),
                bn: BatchNormConfig::new(cout).init(device),
            }),
        }
    }

    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        let shortcut = match &self.downsample {
            Some(d) => d.bn.forward(d.conv.forward(x.clone())),
            None => x.clone(),
        };
        let y = relu(self.bn1.forward(self.conv1.forward(x)));
        let y = self.bn2.forward(self.conv2.forward(y));
        relu(y + shortcut)
    }
}

#[derive(Module, Debug)]
pub struct ProjectionHead {
    pub hidden: Linear,
    pub out: Linear,
}

#[derive(Module, Debug)]
pub struct Encoder {
    pub conv1: Conv2d,
    pub bn1: BatchNorm,
    pub maxpool: Option<MaxPool2d>,
    pub layer1: Vec<BasicBlock>,
    pub layer2: Vec<BasicBlock>,
    pub layer3: Vec<BasicBlock>,
    pub layer4: Vec<BasicBlock>,
    pub avgpool: AdaptiveAvgPool2d,
    pub fc: Linear,
    pub head: Option<ProjectionHead>,
}

/// Row-wise L2 normalisation written with ops the ONNX exporter lowers (no clamp/powf).
pub fn l2_normalize(x: Tensor<2>) -> Tensor<2> {
    let norm = (x.clone() * x.clone()).sum_dim(1).add_scalar(1e-12).sqrt(); // [B, 1]
    x / norm
}

impl Encoder {
    /// The device its parameters live on (flex for a model without any).
    pub fn device(&self) -> Device {
        self.devices()
            .into_iter()
            .next()
            .unwrap_or_else(Device::flex)
    }

    /// Pooled backbone features. `x`: [B, 3, H, W] -> [B, C]
    pub fn features(&self, x: Tensor<4>) -> Tensor<2> {
        let mut x = relu(self.bn1.forward(self.conv1.forward(x)));
        if let Some(mp) = &self.maxpool {
            x = mp.forward(x);
        }
        for block in self
            .layer1
            .iter()
            .chain(&self.layer2)
            .chain(&self.layer3)
            .chain(&self.layer4)
        {
            x = block.forward(x);
        }
        let [b, c, _, _] = x.dims();
        self.avgpool.forward(x).reshape([b, c]) // [B, C]
    }

    /// Un-normalised embedding before the head. [B, 3, H, W] -> [B, dim]
    fn raw_embed(&self, x: Tensor<4>) -> Tensor<2> {
        self.fc.forward(self.features(x))
    }

    /// The retrieval embedding, L2-normalised. [B, 3, H, W] -> [B, dim]
    pub fn embed(&self, x: Tensor<4>) -> Tensor<2> {
        l2_normalize(self.raw_embed(x))
    }

    /// The backbone's embedding and the head's output (none without a head) from one pass:
    /// [`embed`](Self::embed) and [`project`](Self::project) at once. `x`: [B, 3, H, W].
    pub fn both(&self, x: Tensor<4>) -> (Tensor<2>, Option<Tensor<2>>) {
        let raw = self.raw_embed(x);
        (l2_normalize(raw.clone()), self.head_of(raw))
    }

    /// The projection head's output (or [`embed`](Self::embed) when there is no head).
    pub fn project(&self, x: Tensor<4>) -> Tensor<2> {
        match &self.head {
            // the head alone: the exported graph holds no unused backbone normalisation
            Some(_) => self.head_of(self.raw_embed(x)).expect("a head"),
            None => self.embed(x),
        }
    }

    /// The head's L2-normalised output of un-normalised embeddings (none without a head).
    fn head_of(&self, raw: Tensor<2>) -> Option<Tensor<2>> {
        let h = self.head.as_ref()?;
        Some(l2_normalize(h.out.forward(relu(h.hidden.forward(raw)))))
    }
}

/// Which output of the encoder serves as the retrieval embedding.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[cfg_attr(feature = "cli", derive(clap::ValueEnum))]
#[serde(rename_all = "kebab-case")]
pub enum EmbeddingOutput {
    Backbone,
    Head,
}

impl Encoder {
    pub fn output(&self, which: EmbeddingOutput, x: Tensor<4>) -> Tensor<2> {
        match which {
            EmbeddingOutput::Backbone => self.embed(x),
            EmbeddingOutput::Head => self.project(x),
        }
    }
}
