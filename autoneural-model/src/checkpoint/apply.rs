//! Applying checkpoint tensors to a Burn module by path, and collecting them back.
//!
//! Module paths are the checkpoint keys (fields are named after them), up to a prefix
//! mapping. The one layout difference is Burn's `Linear`, which stores `[in, out]` where
//! PyTorch stores `[out, in]`: those weights are transposed on the way in and out.
//! Nothing is applied unless every key fits, and the error lists every problem at once.

use std::collections::BTreeSet;
use std::path::Path;

use burn::module::{Module, ModuleMapper, ModuleVisitor, Param};
use burn::tensor::{Tensor, TensorData};

use crate::checkpoint::safetensors::WeightFiles;
use crate::error::{KeyReport, ModelError, Result};

/// How module paths relate to checkpoint keys.
pub trait KeyMap {
    /// The checkpoint key for a module path.
    fn key_for(&self, module_path: &str) -> String;
    /// Checkpoint keys that are present in real checkpoints but have no place in the model
    /// and are dropped on purpose (e.g. a tied `lm_head.weight`).
    fn ignorable(&self, _key: &str) -> bool {
        false
    }
}

/// Module paths are checkpoint keys.
pub struct Identity;
impl KeyMap for Identity {
    fn key_for(&self, p: &str) -> String {
        p.to_string()
    }
}

#[derive(Default)]
struct PathStack {
    parts: Vec<(String, String)>,
}

impl PathStack {
    fn push(&mut self, name: &str, container: &str) {
        self.parts.push((name.to_string(), container.to_string()));
    }
    fn pop(&mut self) {
        self.parts.pop();
    }
    /// The dotted path; enum variants name no segment (checkpoints do not know them).
    fn path(&self) -> String {
        self.parts
            .iter()
            .filter(|(_, c)| !c.starts_with("Enum:"))
            .map(|(n, _)| n.as_str())
            .collect::<Vec<_>>()
            .join(".")
    }
    /// A `Linear`'s weight, stored transposed relative to PyTorch.
    fn is_linear_weight(&self) -> bool {
        matches!(self.parts.last(), Some((n, c)) if n == "weight" && c == "Struct:Linear")
    }
}

fn transpose(values: &[f32], rows: usize, cols: usize) -> Vec<f32> {
    let mut out = vec![0f32; values.len()];
    for r in 0..rows {
        for c in 0..cols {
            out[c * rows + r] = values[r * cols + c];
        }
    }
    out
}

/// Replaces every parameter by its checkpoint value (f32, on the param's device).
struct Loader<'a, K: KeyMap> {
    files: &'a WeightFiles,
    keys: &'a K,
    stack: PathStack,
    error: Option<ModelError>,
    /// Keys holding NaN or infinite values, with how many of their values are.
    non_finite: Vec<(String, usize, usize)>,
}

impl<K: KeyMap> ModuleMapper for Loader<'_, K> {
    fn enter_module(&mut self, name: &str, container: &str) {
        self.stack.push(name, container);
    }
    fn exit_module(&mut self, _: &str, _: &str) {
        self.stack.pop();
    }
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
        if self.error.is_some() {
            return param;
        }
        let key = self.keys.key_for(&self.stack.path());
        let values = match self.files.read_f32(&key) {
            Ok(v) => v,
            Err(e) => {
                self.error = Some(e);
                return param;
            }
        };
        let bad = values.iter().filter(|v| !v.is_finite()).count();
        if bad > 0 {
            self.non_finite.push((key, bad, values.len()));
        }
        let shape = param.lazy_shape().dims::<D>();
        let values = if self.stack.is_linear_weight() { transpose(&values, shape[1], shape[0]) } else { values };
        let device = param.lazy_device();
        let tensor = Tensor::from_data(TensorData::new(values, shape), &device);
        let id = param.id;
        param.transform_for_load(tensor, id)
    }
}

/// Loads every parameter of `module` from `files`, or reports every mismatch.
pub fn load_module<M: Module, K: KeyMap>(module: M, files: &WeightFiles, keys: &K, dir: &Path) -> Result<M> {
    // First pass: compare every parameter with the files, touching no data.
    let mut report = KeyReport::default();
    let mut used = BTreeSet::new();
    for (key, expected) in param_shapes(&module, keys) {
        match files.shape(&key) {
            None => report.missing.push(key),
            Some(found) => {
                if found != expected {
                    report.mismatched.push((key.clone(), expected, found));
                }
                used.insert(key);
            }
        }
    }
    report.unexpected = files.keys().filter(|k| !used.contains(*k) && !keys.ignorable(k)).cloned().collect();
    if !report.is_empty() {
        return Err(ModelError::Checkpoint { dir: dir.to_path_buf(), report });
    }
    check_memory(&module, &dir.display().to_string())?;
    let mut loader = Loader { files, keys, stack: PathStack::default(), error: None, non_finite: Vec::new() };
    let module = module.map(&mut loader);
    if let Some(e) = loader.error {
        return Err(e);
    }
    if !loader.non_finite.is_empty() {
        // A model with NaN or infinite weights computes NaN: refuse it here, by key, rather
        // than let it answer garbage or train into a NaN loss.
        let n = loader.non_finite.len();
        let listed: Vec<String> =
            loader.non_finite.iter().take(8).map(|(k, bad, all)| format!("{k} ({bad} of {all} values)")).collect();
        let more = if n > 8 { format!(" and {} more", n - 8) } else { String::new() };
        return Err(ModelError::Weights {
            path: dir.to_path_buf(),
            message: format!("{n} tensor(s) hold NaN or infinite values: {}{more}", listed.join(", ")),
        });
    }
    Ok(module)
}

/// Refuses a model whose f32 parameters alone exceed what this process can hold (RAM and
/// swap, or `ulimit -v`), before any of them is allocated: an absurd config is an error
/// with its size, not an allocation failure. `what` names the model in the message.
pub fn check_memory<M: Module>(module: &M, what: &str) -> Result<()> {
    let params: u64 = param_shapes(module, &Identity).iter().map(|(_, s)| s.iter().product::<usize>() as u64).sum();
    let bytes = params.saturating_mul(4);
    match autoneural_io::memory::limit_bytes() {
        Some(limit) if bytes > limit => Err(ModelError::Invalid(format!(
            "{what}: the model has {params} parameters ({} in f32), more than this process can hold ({}: RAM and \
             swap, or ulimit -v); check its sizes (hidden_size, vocab_size, layers, channels)",
            autoneural_io::memory::human(bytes),
            autoneural_io::memory::human(limit)
        ))),
        _ => Ok(()),
    }
}

/// Every parameter's checkpoint key and PyTorch-layout shape, without reading (or
/// materialising) any values.
pub fn param_shapes<M: Module, K: KeyMap>(module: &M, keys: &K) -> Vec<(String, Vec<usize>)> {
    struct Shapes<'a, K: KeyMap> {
        keys: &'a K,
        stack: PathStack,
        out: Vec<(String, Vec<usize>)>,
    }
    impl<K: KeyMap> ModuleVisitor for Shapes<'_, K> {
        fn enter_module(&mut self, name: &str, container: &str) {
            self.stack.push(name, container);
        }
        fn exit_module(&mut self, _: &str, _: &str) {
            self.stack.pop();
        }
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
            let mut shape = param.lazy_shape().dims::<D>().to_vec();
            if self.stack.is_linear_weight() {
                shape.reverse();
            }
            self.out.push((self.keys.key_for(&self.stack.path()), shape));
        }
    }
    let mut v = Shapes { keys, stack: PathStack::default(), out: Vec::new() };
    module.visit(&mut v);
    v.out
}

/// Every parameter as `(checkpoint key, PyTorch-layout shape, f32 values)`.
pub fn collect_tensors<M: Module, K: KeyMap>(module: &M, keys: &K) -> Vec<(String, Vec<usize>, Vec<f32>)> {
    struct Collector<'a, K: KeyMap> {
        keys: &'a K,
        stack: PathStack,
        out: Vec<(String, Vec<usize>, Vec<f32>)>,
    }
    impl<K: KeyMap> ModuleVisitor for Collector<'_, K> {
        fn enter_module(&mut self, name: &str, container: &str) {
            self.stack.push(name, container);
        }
        fn exit_module(&mut self, _: &str, _: &str) {
            self.stack.pop();
        }
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
            let tensor = param.val();
            let mut shape = tensor.dims().to_vec();
            let mut values: Vec<f32> = tensor.into_data().try_into_vec_as::<f32>().expect("float parameter");
            if self.stack.is_linear_weight() {
                values = transpose(&values, shape[0], shape[1]);
                shape.reverse();
            }
            self.out.push((self.keys.key_for(&self.stack.path()), shape, values));
        }
    }
    let mut c = Collector { keys, stack: PathStack::default(), out: Vec::new() };
    module.visit(&mut c);
    c.out
}

/// Rewrites parameters by path: `f(key, PyTorch-layout shape, values)` returns new values
/// (same layout) or `None` to keep the parameter as it is.
pub fn map_tensors<M, K, F>(module: M, keys: &K, mut f: F) -> M
where
    M: Module,
    K: KeyMap,
    F: FnMut(&str, &[usize], Vec<f32>) -> Option<Vec<f32>>,
{
    rewrite_tensors(module, keys, |key, shape, values| match f(key, shape, values) {
        Some(new) => Rewrite::Values(new),
        None => Rewrite::Keep,
    })
}

/// What [`rewrite_tensors`] does with one parameter.
pub enum Rewrite {
    Keep,
    /// New values, same layout and shape.
    Values(Vec<f32>),
    /// A single zero in place of the values (shape `[1, ..]`), for a parameter whose values
    /// are held elsewhere (packed low-bit weights) and must not take memory.
    Drop,
}

/// [`map_tensors`] that may also drop a parameter's values ([`Rewrite::Drop`]). Parameters
/// are materialised, rewritten and released one at a time, so a lazily initialised model
/// is never whole in f32.
pub fn rewrite_tensors<M, K, F>(module: M, keys: &K, f: F) -> M
where
    M: Module,
    K: KeyMap,
    F: FnMut(&str, &[usize], Vec<f32>) -> Rewrite,
{
    struct Rewriter<'a, K: KeyMap, F> {
        keys: &'a K,
        stack: PathStack,
        f: F,
    }
    impl<K: KeyMap, F: FnMut(&str, &[usize], Vec<f32>) -> Rewrite> ModuleMapper for Rewriter<'_, K, F> {
        fn enter_module(&mut self, name: &str, container: &str) {
            self.stack.push(name, container);
        }
        fn exit_module(&mut self, _: &str, _: &str) {
            self.stack.pop();
        }
        fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
            let tensor = param.val();
            let dims = tensor.dims();
            let linear = self.stack.is_linear_weight();
            let mut values: Vec<f32> = tensor.into_data().try_into_vec_as::<f32>().expect("float parameter");
            let mut shape = dims.to_vec();
            if linear {
                values = transpose(&values, shape[0], shape[1]);
                shape.reverse();
            }
            let key = self.keys.key_for(&self.stack.path());
            let device = param.lazy_device();
            let id = param.id;
            match (self.f)(&key, &shape, values) {
                Rewrite::Keep => param,
                Rewrite::Values(new) => {
                    let new = if linear { transpose(&new, shape[0], shape[1]) } else { new };
                    param.transform_for_load(Tensor::from_data(TensorData::new(new, dims), &device), id)
                }
                Rewrite::Drop => Param::initialized(id, Tensor::zeros([1; D], &device)),
            }
        }
    }
    module.map(&mut Rewriter { keys, stack: PathStack::default(), f })
}

/// Every float parameter's key and id, in module order.
pub fn param_keys<M: Module, K: KeyMap>(module: &M, keys: &K) -> Vec<(String, burn::module::ParamId)> {
    struct Keys<'a, K: KeyMap> {
        keys: &'a K,
        stack: PathStack,
        out: Vec<(String, burn::module::ParamId)>,
    }
    impl<K: KeyMap> ModuleVisitor for Keys<'_, K> {
        fn enter_module(&mut self, name: &str, container: &str) {
            self.stack.push(name, container);
        }
        fn exit_module(&mut self, _: &str, _: &str) {
            self.stack.pop();
        }
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
            self.out.push((self.keys.key_for(&self.stack.path()), param.id));
        }
    }
    let mut v = Keys { keys, stack: PathStack::default(), out: Vec::new() };
    module.visit(&mut v);
    v.out
}
