//! Paged KV-cache storage: per layer, `n_blocks × block_size` token slots of K and V, stored
//! as IEEE f16 (the default of llama.cpp and of the checkpoints' own dtype): half the memory of
//! f32, and the rounding llama.cpp's outputs were made with.
//! Which blocks a sequence owns (its block table) is decided by the engine's block pool; the
//! model only reads and writes the slots a batch names.

/// Per-token, per-layer cache widths (MLA stores one latent plus a rope key instead of
/// per-head K/V; a GQA model stores `n_kv_heads × head_dim` for each).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KvLayout {
    pub n_layers: usize,
    pub k_width: usize,
    pub v_width: usize,
}

impl KvLayout {
    /// Bytes one token occupies across all layers at `elem_bytes` per value.
    pub fn bytes_per_token(&self, elem_bytes: usize) -> usize {
        self.n_layers * (self.k_width + self.v_width) * elem_bytes
    }
}

/// Element type of the cache storage. [`KvCache::new`] is f16 (what [`crate::attention`]
/// reads); f32 keeps MLA latents exact for models whose attention reads them through
/// [`KvCache::layer_f32`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum KvDtype {
    #[default]
    F16,
    F32,
}

impl KvDtype {
    pub fn bytes(self) -> usize {
        match self {
            KvDtype::F16 => 2,
            KvDtype::F32 => 4,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            KvDtype::F16 => "f16",
            KvDtype::F32 => "f32",
        }
    }
}

impl std::fmt::Display for KvDtype {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for KvDtype {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.to_ascii_lowercase().as_str() {
            "f16" => Ok(KvDtype::F16),
            "f32" => Ok(KvDtype::F32),
            _ => Err(format!("unknown KV-cache type `{s}` (expected f16 or f32)")),
        }
    }
}

pub struct KvCache {
    layout: KvLayout,
    block_size: usize,
    n_blocks: usize,
    /// f16 bit patterns (empty per layer when `dtype` is F32).
    k: Vec<Vec<u16>>,
    v: Vec<Vec<u16>>,
    dtype: KvDtype,
    /// f32 storage (empty per layer when `dtype` is F16).
    k32: Vec<Vec<f32>>,
    v32: Vec<Vec<f32>>,
}

impl KvCache {
    pub fn new(layout: KvLayout, block_size: usize, n_blocks: usize) -> Self {
        let slots = block_size * n_blocks;
        KvCache {
            layout,
            block_size,
            n_blocks,
            k: (0..layout.n_layers)
                .map(|_| vec![0; slots * layout.k_width])
                .collect(),
            v: (0..layout.n_layers)
                .map(|_| vec![0; slots * layout.v_width])
                .collect(),
            dtype: KvDtype::F16,
            k32: (0..layout.n_layers).map(|_| Vec::new()).collect(),
            v32: (0..layout.n_layers).map(|_| Vec::new()).collect(),
        }
    }

    /// A cache with the given storage type. With [`KvDtype::F32`] the f16 accessors
    /// ([`KvCache::layer`]) return empty slices; use [`KvCache::layer_f32`].
    pub fn with_dtype(
        layout: KvLayout,
        block_size: usize,
        n_blocks: usize,
        dtype: KvDtype,
    ) -> Self {
        if dtype == KvDtype::F16 {
            return Self::new(layout, block_size, n_blocks);
        }
        let slots = block_size * n_blocks;
        let empty = || (0..layout.n_layers).map(|_| Vec::new()).collect();
        KvCache {
            layout,
            block_size,
            n_blocks,
            k: empty(),
            v: empty(),
            dtype,
            k32: (0..layout.n_layers)
                .map(|_| vec![0.0; slots * layout.k_width])
                .collect(),
            v32: (0..layout.n_layers)
                .map(|_| vec![0.0; slots * layout.v_width])
                .collect(),
        }
    }

    pub fn dtype(&self) -> KvDtype {
        self.dtype
    }

    /// The f32 storage of layer `l` (empty slices unless the dtype is F32).
    pub fn layer_f32(&self, l: usize) -> (&[f32], &[f32]) {
        (&self.k32[l], &self.v32[l])
    }

    pub fn layer_f32_mut(&mut self, l: usize) -> (&mut [f32], &mut [f32]) {
        (&mut self.k32[l], &mut self.v32[l])
    }

    pub fn layout(&self) -> KvLayout {
        self.layout
    }
    pub fn block_size(&self) -> usize {
        self.block_size
    }
    pub fn n_blocks(&self) -> usize {
        self.n_blocks
    }

    /// The slot of position `pos` of a sequence with this block table.
    #[inline]
    pub fn slot(&self, block_table: &[u32], pos: usize) -> usize {
        block_table[pos / self.block_size] as usize * self.block_size + pos % self.block_size
    }

    /// Bytes per element of the storage.
    pub const ELEM_BYTES: usize = 2;

    pub fn layer(&self, l: usize) -> (&[u16], &[u16]) {
        (&self.k[l], &self.v[l])
    }

    pub fn layer_mut(&mut self, l: usize) -> (&mut [u16], &mut [u16]) {
        (&mut self.k[l], &mut self.v[l])
    }

    /// Copy the slots of `positions` from block `src` to block `dst` in every layer
    /// (copy-on-write of a shared, partially filled block).
    pub fn copy_block(&mut self, src: u32, dst: u32) {
        let bs = self.block_size;
        if self.dtype == KvDtype::F32 {
            for l in 0..self.layout.n_layers {
                for (buf, w) in [
                    (&mut self.k32[l], self.layout.k_width),
                    (&mut self.v32[l], self.layout.v_width),
                ] {
                    let (s, d) = (src as usize * bs * w, dst as usize * bs * w);
                    buf.copy_within(s..s + bs * w, d);
                }
            }
            return;
        }
        for l in 0..self.layout.n_layers {
            for (buf, w) in [
                (&mut self.k[l], self.layout.k_width),
                (&mut self.v[l], self.layout.v_width),
            ] {
                let (s, d) = (src as usize * bs * w, dst as usize * bs * w);
                buf.copy_within(s..s + bs * w, d);
            }
        }
    }
}
