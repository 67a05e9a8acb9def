//! Nearest-neighbour positives from a support queue (NNCLR: Dwibedi et al., 2021). Each
//! image's positive is not its own other view but the embedding, among the last Q images the
//! encoder has seen, that is nearest its view. Two augmentations of one field only teach
//! invariance to the augmentations; a neighbour from the queue is often another cell of the
//! same kind, so the positive carries variation no augmentation draws.
//!
//! The queue holds detached rows (no gradient flows into the past) and is filled first in,
//! first out. It is not saved with a checkpoint: a resumed run refills it within Q / N
//! batches, and until it holds a row the step falls back to the plain two-view loss.

use burn::prelude::*;

/// The last `capacity` embeddings seen, newest last.
#[derive(Debug, Clone)]
pub struct SupportQueue {
    capacity: usize,
    rows: Option<Tensor<2>>,
}

impl SupportQueue {
    /// An empty queue of `capacity` rows (≥ 1).
    pub fn new(capacity: usize) -> Self {
        Self {
            capacity: capacity.max(1),
            rows: None,
        }
    }

    /// Rows held now.
    pub fn len(&self) -> usize {
        self.rows.as_ref().map_or(0, |r| r.dims()[0])
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// For each row of `z`, the queue's row most similar to it (by dot product, which for
    /// L2-normalised rows is the cosine), detached; None while the queue is empty.
    ///
    /// # Shapes
    /// - `z`: `[N, D]`, L2-normalised
    /// - output: `[N, D]`
    pub fn nearest(&self, z: &Tensor<2>) -> Option<Tensor<2>> {
        let rows = self.rows.as_ref()?;
        let [n, _] = z.dims();
        let sim = z.clone().detach().matmul(rows.clone().transpose()); // [N, Q]
        let idx = sim.argmax(1).reshape([n]); // [N]
        Some(rows.clone().select(0, idx))
    }

    /// Append `z`'s rows, detached, and drop the oldest beyond the capacity.
    ///
    /// # Shapes
    /// - `z`: `[N, D]`, with the D of the rows already held
    pub fn push(&mut self, z: &Tensor<2>) {
        let z = z.clone().detach();
        let all = match self.rows.take() {
            Some(rows) => Tensor::cat(vec![rows, z], 0),
            None => z,
        };
        let len = all.dims()[0];
        self.rows = Some(if len > self.capacity {
            all.narrow(0, len - self.capacity, self.capacity)
        } else {
            all
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rows(v: &[[f32; 2]], device: &Device) -> Tensor<2> {
        let flat: Vec<f32> = v.iter().flatten().copied().collect();
        Tensor::from_data(TensorData::new(flat, [v.len(), 2]), device)
    }

    fn values(t: Tensor<2>) -> Vec<f32> {
        t.into_data().try_to_vec::<f32>().unwrap()
    }

    #[test]
    fn an_empty_queue_has_no_neighbours() {
        let device = Device::flex();
        let q = SupportQueue::new(4);
        assert!(q.nearest(&rows(&[[1.0, 0.0]], &device)).is_none());
    }

    #[test]
    fn each_row_gets_its_nearest_queued_row() {
        let device = Device::flex();
        let mut q = SupportQueue::new(8);
        q.push(&rows(&[[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]], &device));
        let z = rows(&[[0.0, 0.9], [-0.8, 0.1], [0.9, -0.1]], &device);
        let nn = values(q.nearest(&z).unwrap());
        assert_eq!(nn, [0.0, 1.0, -1.0, 0.0, 1.0, 0.0]);
    }

    #[test]
    fn the_oldest_rows_leave_first() {
        let device = Device::flex();
        let mut q = SupportQueue::new(3);
        q.push(&rows(&[[1.0, 0.0], [0.0, 1.0]], &device));
        q.push(&rows(&[[-1.0, 0.0], [0.0, -1.0]], &device));
        assert_eq!(q.len(), 3);
        // [1, 0] left: a row nearest it now gets the nearest of the rest
        let nn = values(q.nearest(&rows(&[[1.0, 0.1]], &device)).unwrap());
        assert_eq!(nn, [0.0, 1.0]);
    }
}
