//! Reading (memory-mapped, single or sharded) and writing safetensors weights.
//! Weights of any float dtype the hub uses (f32, bf16, f16) are converted to f32.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use memmap2::Mmap;
use safetensors::tensor::{Dtype, Metadata, TensorInfo};

use crate::checkpoint::json::read_object;
use crate::error::{ModelError, Result};

struct Shard {
    path: PathBuf,
    map: Mmap,
    data_start: usize,
    meta: Metadata,
}

/// All tensors of a checkpoint directory, by key, without reading their data.
pub struct WeightFiles {
    shards: Vec<Shard>,
    index: BTreeMap<String, usize>,
}

impl WeightFiles {
    /// `dir/model.safetensors`, or the shards that `dir/model.safetensors.index.json` lists.
    pub fn open_dir(dir: &Path) -> Result<Self> {
        let single = dir.join("model.safetensors");
        let index = dir.join("model.safetensors.index.json");
        if single.exists() {
            return Self::open_files(&[single]);
        }
        if !index.exists() {
            return Err(ModelError::Weights {
                path: dir.to_path_buf(),
                message: "no model.safetensors or model.safetensors.index.json in this directory".into(),
            });
        }
        let obj = read_object(&index)?;
        let map = obj
            .get("weight_map")
            .and_then(|v| v.as_object())
            .ok_or_else(|| ModelError::config(&index, "weight_map", "missing (expected an object of key -> file)"))?;
        let mut files: Vec<String> = Vec::new();
        for (key, file) in map {
            let file = file
                .as_str()
                .ok_or_else(|| ModelError::config(&index, format!("weight_map.{key}"), "expected a file name"))?;
            // Shards live in the checkpoint directory: an index cannot send the loader to
            // `/dev/...`, `/etc/...` or `../..`. (Symlinked shards, as the hub's cache has
            // them, are fine: this is about what the index names.)
            let inside =
                !file.is_empty() && Path::new(file).components().all(|c| matches!(c, std::path::Component::Normal(_)));
            if !inside {
                return Err(ModelError::config(
                    &index,
                    format!("weight_map.{key}"),
                    format!("{file:?} is not a file inside the checkpoint directory"),
                ));
            }
            if !files.iter().any(|f| f == file) {
                files.push(file.to_string());
            }
        }
        let paths: Vec<PathBuf> = files.iter().map(|f| dir.join(f)).collect();
        let out = Self::open_files(&paths)?;
        // every key the index promises must be in the file it names
        for (key, file) in map {
            let shard = out.index.get(key).map(|&i| &out.shards[i].path);
            if shard.map(|p| p.file_name().and_then(|n| n.to_str()) != file.as_str()).unwrap_or(true) {
                return Err(ModelError::Weights {
                    path: index.clone(),
                    message: format!("weight_map says {key} is in {file}, but that file does not hold it"),
                });
            }
        }
        Ok(out)
    }

    pub fn open_files(paths: &[PathBuf]) -> Result<Self> {
        let mut shards = Vec::new();
        let mut index = BTreeMap::new();
        for path in paths {
            let (file, _) = autoneural_io::read::open(path, autoneural_io::read::WEIGHTS)?;
            // SAFETY: the map is read-only; a checkpoint changed underneath a running
            // process is outside what any loader can defend against.
            let map = unsafe { Mmap::map(&file) }.map_err(|e| ModelError::io(path, e))?;
            let (header, meta) = safetensors::SafeTensors::read_metadata(&map[..]).map_err(|e| {
                ModelError::Weights { path: path.clone(), message: format!("not a valid safetensors file: {e}") }
            })?;
            for key in meta.tensors().keys() {
                if index.insert(key.clone(), shards.len()).is_some() {
                    return Err(ModelError::Weights {
                        path: path.clone(),
                        message: format!("tensor {key} appears in more than one shard"),
                    });
                }
            }
            shards.push(Shard { path: path.clone(), map, data_start: 8 + header, meta });
        }
        Ok(Self { shards, index })
    }

    pub fn keys(&self) -> impl Iterator<Item = &String> {
        self.index.keys()
    }

    fn info(&self, key: &str) -> Option<(&Shard, &TensorInfo)> {
        let shard = &self.shards[*self.index.get(key)?];
        Some((shard, shard.meta.info(key)?))
    }

    pub fn shape(&self, key: &str) -> Option<Vec<usize>> {
        self.info(key).map(|(_, i)| i.shape.clone())
    }

    /// The tensor's values as f32, row-major.
    pub fn read_f32(&self, key: &str) -> Result<Vec<f32>> {
        let (shard, info) = self.info(key).ok_or_else(|| ModelError::Invalid(format!("no tensor {key}")))?;
        let (a, b) = info.data_offsets;
        let bytes = &shard.map[shard.data_start + a..shard.data_start + b];
        let werr = |message: String| ModelError::Weights { path: shard.path.clone(), message };
        let n: usize = info.shape.iter().product();
        let width = match info.dtype {
            Dtype::F32 => 4,
            Dtype::BF16 | Dtype::F16 => 2,
            other => {
                return Err(werr(format!("{key}: dtype {other:?} is not a float type (expected F32, BF16 or F16)")));
            }
        };
        if bytes.len() != n * width {
            return Err(werr(format!("{key}: {} bytes for shape {:?}", bytes.len(), info.shape)));
        }
        let out = match info.dtype {
            Dtype::F32 => bytes.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect(),
            Dtype::BF16 => bytes.chunks_exact(2).map(|c| half::bf16::from_le_bytes([c[0], c[1]]).to_f32()).collect(),
            _ => bytes.chunks_exact(2).map(|c| half::f16::from_le_bytes([c[0], c[1]]).to_f32()).collect(),
        };
        Ok(out)
    }
}

/// Writes f32 tensors `(key, shape, values)` to one safetensors file.
pub fn write_f32(path: &Path, tensors: &[(String, Vec<usize>, Vec<f32>)]) -> Result<()> {
    let views: Vec<(String, safetensors::tensor::TensorView<'_>)> = tensors
        .iter()
        .map(|(k, shape, v)| {
            let view = safetensors::tensor::TensorView::new(Dtype::F32, shape.clone(), bytemuck::cast_slice(v))
                .map_err(|e| ModelError::Invalid(format!("{k}: {e}")))?;
            Ok((k.clone(), view))
        })
        .collect::<Result<_>>()?;
    let mut meta = std::collections::HashMap::new();
    meta.insert("format".to_string(), "pt".to_string());
    // write next to the target and rename, so an interrupted save never leaves half a file
    let tmp = path.with_extension("safetensors.partial");
    safetensors::serialize_to_file(views, Some(meta), &tmp)
        .map_err(|e| ModelError::Weights { path: tmp.clone(), message: e.to_string() })?;
    std::fs::rename(&tmp, path).map_err(|e| ModelError::io(path, e))
}
