//! What arithmetic the weight ops of this thread run: one per-thread context, changed only
//! through [`Scope`] guards that put the previous context back when they are dropped,
//! whether the code inside returned or panicked.
//!
//! - `activations`: nothing (float), the input ranges recorded (calibration), the inputs
//!   fake-quantized from encodings (a quantized checkpoint), or a QAT stage's fake
//!   quantizers on inputs and weights ([`super::activations`], [`super::qat`]);
//! - `packed`: weight matrices whose products run through the int8/int4 kernels
//!   ([`super::packed`]);
//! - `defer_running_stats`: batch-norm running statistics left pending on this thread (a
//!   data-parallel replica; `crate::nn::conv_norm`).
//!
//! A layer asks the context once per forward ([`crate::nn::linear::Arithmetic`] says what it
//! then runs); callers install a context with the `with_*` functions or a [`Scope`].

use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::Arc;

use burn::module::ParamId;

use super::activations::Ranges;
use super::encoding::Encoding;
use super::packed::PackedWeights;
use super::qat::Qat;

/// What happens at the input of every weight op.
pub enum Activations {
    /// Nothing: float.
    Float,
    /// Each input's range is recorded (calibration).
    Observe(Ranges),
    /// Inputs with an encoding are fake-quantized (a quantized model runs as calibrated).
    Quantize(Arc<HashMap<ParamId, Encoding>>),
    /// A QAT stage's fake quantizers, on inputs and weights.
    Train(Arc<Qat>),
}

/// The whole per-thread context.
pub struct Context {
    pub activations: Activations,
    pub packed: Option<Arc<PackedWeights>>,
    pub defer_running_stats: bool,
}

thread_local! {
    static CONTEXT: RefCell<Context> =
        const { RefCell::new(Context { activations: Activations::Float, packed: None, defer_running_stats: false }) };
}

/// Reads this thread's context.
pub fn with<R>(f: impl FnOnce(&Context) -> R) -> R {
    CONTEXT.with_borrow(f)
}

/// Changes this thread's context (inside a scope: the scope restores its own part).
pub(crate) fn with_mut<R>(f: impl FnOnce(&mut Context) -> R) -> R {
    CONTEXT.with_borrow_mut(f)
}

/// This thread's context as other threads take it up ([`share`]): what a weight op runs
/// must not depend on which thread of a pool runs it.
pub struct Shared {
    activations: Activations,
    packed: Option<Arc<PackedWeights>>,
    defer_running_stats: bool,
}

/// Another handle on `a` for another thread, or `None` for ranges being recorded (a
/// calibration's ranges belong to the thread that collects them).
fn shareable(a: &Activations) -> Option<Activations> {
    match a {
        Activations::Float => Some(Activations::Float),
        Activations::Observe(_) => None,
        Activations::Quantize(e) => Some(Activations::Quantize(e.clone())),
        Activations::Train(q) => Some(Activations::Train(q.clone())),
    }
}

/// This thread's context for worker threads to enter ([`Shared::enter`]), or `None` while it
/// records ranges.
pub fn share() -> Option<Shared> {
    with(|c| {
        Some(Shared {
            activations: shareable(&c.activations)?,
            packed: c.packed.clone(),
            defer_running_stats: c.defer_running_stats,
        })
    })
}

impl Shared {
    /// Installs the shared context on this thread until the scopes are dropped.
    pub fn enter(&self) -> [Scope; 3] {
        let activations = shareable(&self.activations).expect("a shared context never records ranges");
        [
            Scope::activations(activations),
            Scope::packed(self.packed.clone()),
            Scope::defer_running_stats(self.defer_running_stats),
        ]
    }
}

/// The part of the context a scope replaced, to put back.
enum Saved {
    Activations(Activations),
    Packed(Option<Arc<PackedWeights>>),
    Defer(bool),
}

/// One part of this thread's context replaced until the scope is dropped (at the end of a
/// block, or while a panic unwinds through it); the other parts stay as they are, so scopes
/// of different parts nest freely.
#[must_use = "the context is restored when the scope is dropped"]
pub struct Scope {
    saved: Option<Saved>,
}

impl Scope {
    /// What happens at op inputs, until the scope ends.
    pub fn activations(new: Activations) -> Self {
        let previous = with_mut(|c| std::mem::replace(&mut c.activations, new));
        Self { saved: Some(Saved::Activations(previous)) }
    }

    /// The packed weights low-bit products read, until the scope ends.
    pub fn packed(new: Option<Arc<PackedWeights>>) -> Self {
        let previous = with_mut(|c| std::mem::replace(&mut c.packed, new));
        Self { saved: Some(Saved::Packed(previous)) }
    }

    /// Whether batch-norm running statistics are left pending, until the scope ends.
    pub fn defer_running_stats(on: bool) -> Self {
        let previous = with_mut(|c| std::mem::replace(&mut c.defer_running_stats, on));
        Self { saved: Some(Saved::Defer(previous)) }
    }

    /// Ends an [`Scope::activations`] scope and returns the activations as the code inside
    /// left them (e.g. the ranges a calibration recorded).
    pub fn exit_activations(mut self) -> Activations {
        match self.saved.take() {
            Some(Saved::Activations(previous)) => with_mut(|c| std::mem::replace(&mut c.activations, previous)),
            other => {
                self.saved = other;
                panic!("exit_activations on a scope of another part of the context")
            }
        }
    }
}

impl Drop for Scope {
    fn drop(&mut self) {
        match self.saved.take() {
            Some(Saved::Activations(a)) => with_mut(|c| c.activations = a),
            Some(Saved::Packed(p)) => with_mut(|c| c.packed = p),
            Some(Saved::Defer(d)) => with_mut(|c| c.defer_running_stats = d),
            None => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_panic_inside_a_scope_restores_the_previous_context() {
        let result = std::panic::catch_unwind(|| {
            let _scope = Scope::defer_running_stats(true);
            assert!(with(|c| c.defer_running_stats));
            panic!("inside the scope");
        });
        assert!(result.is_err());
        assert!(!with(|c| c.defer_running_stats), "the deferral leaked past the panic");
        // Scopes of different parts nest without undoing each other's changes.
        let observing = Scope::activations(Activations::Observe(Ranges::new()));
        let deferring = Scope::defer_running_stats(true);
        with_mut(|c| {
            if let Activations::Observe(r) = &mut c.activations {
                r.insert(ParamId::from(1), Default::default());
            }
        });
        drop(deferring);
        let Activations::Observe(ranges) = observing.exit_activations() else { panic!("observing") };
        assert_eq!(ranges.len(), 1, "the ranges recorded inside the inner scope are kept");
        assert!(with(|c| !c.defer_running_stats && matches!(c.activations, Activations::Float)));
    }

    #[test]
    fn another_thread_runs_under_the_shared_context_and_calibration_is_not_shared() {
        let encodings = Arc::new(HashMap::new());
        let _quantize = Scope::activations(Activations::Quantize(encodings.clone()));
        let _defer = Scope::defer_running_stats(true);
        let shared = share().expect("a quantized context is shared");
        std::thread::scope(|s| {
            s.spawn(|| {
                assert!(with(|c| matches!(c.activations, Activations::Float)), "a new thread starts float");
                {
                    let _in = shared.enter();
                    assert!(with(|c| c.defer_running_stats
                        && matches!(&c.activations, Activations::Quantize(e) if Arc::ptr_eq(e, &encodings))));
                }
                assert!(with(|c| !c.defer_running_stats && matches!(c.activations, Activations::Float)));
            });
        });
        let observing = Scope::activations(Activations::Observe(Ranges::new()));
        assert!(share().is_none(), "ranges being recorded stay on their thread");
        drop(observing);
    }
}
