//! Hot swap: validate a candidate module, switch to it atomically, keep the last good
//! one when it is bad (docs/abi.md, *Hot swap acceptance checks*).
//!
//! One task ([`Swapper::run`]) takes the source's newest state ([`super::source`]) and
//! handles candidates one at a time, so swaps never overlap. For each candidate:
//!
//! 1. **Decode**: gunzip when gzip ([`source::decode`]); a candidate whose digest is
//!    the active module's, or the last one looked at, is skipped (a relist or a
//!    metadata-only change of the ConfigMap is not a new module).
//! 2. **Trust**: the administrator's [`TrustPolicy`]: the digest is pinned, the
//!    signature is a trusted key's, or both, before anything parses the module.
//! 3. **Validate**: [`SandboxEngine::load`] (the runtime's one acceptance check: no
//!    imports, exports and ABI 1, manifest, compile, a smoke `reconcile` within the
//!    deadline), off the async executor, with the same engine, limits and
//!    compiled-module cache as the active module.
//! 4. **Rights**: for every single right the new manifest needs and the active one did
//!    not ([`crate::policy::rbac::access_checks`]), a SelfSubjectAccessReview; a denied one
//!    refuses the candidate, naming the missing permission.
//! 5. **Watches**: if the manifest changes what is watched or how it is written
//!    (primary, related, reads, owner label, field manager), the kinds are
//!    discovered, new watches started (on the same work queue) and the swap waits
//!    until each has delivered its initial list; reconciles go on with the old module
//!    and its watches meanwhile.
//! 6. **Commit**: the new wiring (if any) is stored, then the new module; calls in
//!    flight finish on the module (and wiring) they started with, new reconciles use
//!    the new ones; the old watches stop when the last reconcile using them ends.
//!    Then every primary is queued once, so the new logic applies to all of them. The
//!    queue hands a key out once at a time and marks a key queued while in flight
//!    dirty (re-run after it finishes), so no reconcile is lost or run concurrently.
//!    A reconcile that starts in the instant between the two stores may pair the old
//!    module with the new wiring; the requeue runs it again with the new pair.
//!
//! A refusal that is not the candidate's fault (the file cannot be read, an API error
//! while checking rights or discovering kinds, new watches that do not list in time,
//! a CRD that is not installed yet) is retried with backoff, from
//! [`RETRY_FIRST`] doubling to [`RETRY_MAX`], until the source changes; one that
//! is the candidate's fault is final for that payload.
//!
//! Every module that becomes active is kept as the last good one, with its signature
//! (in the compiled-module cache directory): at start, when the source holds nothing
//! valid, [`Swapper::first_module`] starts from it, with a Warning, once it passes
//! every check again, the trust policy included.
//!
//! A refused candidate leaves the active module serving and is reported: a log line,
//! `wasm_operator_module_rejected_total{reason}`, `/module`'s `lastRejection`, and for
//! a ConfigMap source a Warning event `ModuleRejected` on the ConfigMap. A swap gives
//! a Normal event `ModuleActivated` there.

use super::source::{self, Payload, SourceState};
use super::trust::TrustPolicy;
use crate::cluster::sync::SyncState;
use crate::cluster::{DiscoveryError, KindRegistry, Scope, watches};
use crate::control::{Controller, Wiring};
use crate::error_chain;
use crate::execute::Executor;
use crate::module::{ActiveModule, LoadedModuleInfo, Module, ModuleRejection, WasmModule};
use crate::observe::{Metrics, ModuleLabels};
use crate::policy::AdminPolicy;
use crate::queue::Cause;
use crate::runtime::{LoadError, LoadedModule, ModuleCaller, SandboxEngine, digest};
use k8s_openapi::api::authorization::v1::{SelfSubjectAccessReview, SelfSubjectAccessReviewSpec};
use k8s_openapi::api::core::v1::ObjectReference;
use kube::Client;
use kube::api::{Api, PostParams};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use reconcile_sdk::Manifest;
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use tokio::sync::watch as channel;

/// The controller name on the swapper's events.
const REPORTER: &str = "wasm-operator";

/// Why a candidate was refused.
#[derive(Debug, Clone)]
pub struct Refusal {
    /// The failed check (the metric's `reason` label).
    pub reason: &'static str,
    /// Why, in words.
    pub message: String,
    /// The candidate's digest.
    pub digest: String,
    /// Not the candidate's fault (an API error, a timeout): worth trying again.
    pub transient: bool,
}

/// The first wait before a transient refusal is tried again.
pub const RETRY_FIRST: Duration = Duration::from_secs(5);
/// The longest wait between tries.
pub const RETRY_MAX: Duration = Duration::from_secs(300);

/// The wait before try `attempt` (1 for the first retry).
fn retry_delay(attempt: u32) -> Duration {
    RETRY_FIRST.saturating_mul(2u32.saturating_pow(attempt.saturating_sub(1))).min(RETRY_MAX)
}

/// The `reason` label for a runtime validation failure.
pub fn load_reason(err: &LoadError) -> &'static str {
    match err {
        LoadError::Read { .. } => "read",
        LoadError::Limits(_) => "limits",
        LoadError::Compile(_) => "compile",
        LoadError::Imports { .. } => "imports",
        LoadError::MissingExport { .. } | LoadError::WrongExport { .. } => "exports",
        LoadError::WrongAbi { .. } => "abi",
        LoadError::Link(_) => "link",
        LoadError::Describe(_) => "describe",
        LoadError::ManifestDecode(_) | LoadError::ManifestInvalid(_) => "manifest",
        LoadError::SmokeTest(_) => "smoke",
        LoadError::Task(_) => "internal",
    }
}

/// Whether going from `old` to `new` needs new watches and a new executor.
pub fn needs_new_wiring(old: &Manifest, new: &Manifest) -> bool {
    old.primary != new.primary
        || old.related != new.related
        || old.reads != new.reads
        || old.owner_label != new.owner_label
        || old.field_manager != new.field_manager
}

/// Refuses a candidate that would widen the module's identity (docs/abi.md, *Hot swap
/// acceptance checks*): another owner label, field manager or primary kind would let
/// it claim objects that are not its own, or leave its own unmanaged; dropping a
/// finalizer that primaries still carry (`carried`) would keep them from ever being
/// deleted, since confinement only lets a module remove its own finalizers. The
/// error is (reason, message).
pub fn check_identity(
    old: &Manifest,
    new: &Manifest,
    carried: &[String],
) -> Result<(), (&'static str, String)> {
    let changed = |field: &str, old: &str, new: &str| {
        Err((
            "identity",
            format!(
                "the candidate changes {field} from {old:?} to {new:?}; a hot swap cannot change the module's identity (restart the operator with the new module instead)"
            ),
        ))
    };
    if old.owner_label != new.owner_label {
        return changed("ownerLabel", &old.owner_label, &new.owner_label);
    }
    if old.field_manager != new.field_manager {
        return changed("fieldManager", &old.field_manager, &new.field_manager);
    }
    let kind = |m: &Manifest| format!("{} {}", m.primary.api_version, m.primary.kind);
    if kind(old) != kind(new) {
        return changed("the primary kind", &kind(old), &kind(new));
    }
    for finalizer in old.finalizers.iter().filter(|f| !new.finalizers.contains(f)) {
        if carried.contains(finalizer) {
            return Err((
                "finalizer",
                format!(
                    "the candidate drops the finalizer {finalizer:?}, which primaries still carry: they could never finish deleting (keep it in the manifest until no primary carries it)"
                ),
            ));
        }
    }
    Ok(())
}

/// What a swap changes in a running operator.
#[derive(Clone)]
pub struct SwapTarget {
    /// The API client.
    pub client: Client,
    /// The API server, for messages.
    pub server: String,
    /// The primary watch's scope (also where rights are checked).
    pub scope: Scope,
    /// The events' reportingInstance.
    pub instance: Option<String>,
    /// The controller (wiring and queue).
    pub controller: Arc<Controller>,
    /// The active module's holder.
    pub active: Arc<ActiveModule>,
}

/// Validates candidates and swaps them in. See the module docs.
pub struct Swapper {
    engine: SandboxEngine,
    caller: ModuleCaller,
    client: Client,
    recorder: Recorder,
    metrics: Arc<Metrics>,
    // The raw digest of the last payload handled, accepted or not.
    last_seen: Option<String>,
    last_missing: Option<String>,
    sync_timeout: Duration,
    policy: AdminPolicy,
    trust: TrustPolicy,
}

/// A module that passed every check a payload alone can fail: decoding, trust,
/// validation and the policy.
pub struct Accepted {
    /// The module.
    pub module: Arc<WasmModule>,
    /// Where it came from.
    pub origin: String,
    /// The fingerprint of the key that signed it, when keys are required.
    pub signer: Option<String>,
}

impl std::fmt::Debug for Swapper {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Swapper").field("engine", &self.engine).finish_non_exhaustive()
    }
}

impl Swapper {
    /// A swapper loading with `engine`, calling through `caller` (shared by every
    /// version, so `--concurrency` bounds calls across a swap), reporting into
    /// `metrics` and, as events, through `client`.
    pub fn new(
        engine: SandboxEngine,
        caller: ModuleCaller,
        client: Client,
        instance: Option<String>,
        metrics: Arc<Metrics>,
        policy: AdminPolicy,
        sync_timeout: Duration,
    ) -> Self {
        let reporter = Reporter { controller: REPORTER.to_owned(), instance };
        Self {
            recorder: Recorder::new(client.clone(), reporter),
            engine,
            caller,
            client,
            metrics,
            policy,
            last_seen: None,
            last_missing: None,
            sync_timeout,
            trust: TrustPolicy::default(),
        }
    }

    /// Accepts only modules `trust` trusts (the default trusts all).
    #[must_use]
    pub fn with_trust(mut self, trust: TrustPolicy) -> Self {
        self.trust = trust;
        self
    }

    /// The engine candidates are loaded with.
    pub fn engine(&self) -> &SandboxEngine {
        &self.engine
    }

    /// Decodes one payload (step 1).
    fn decode(payload: &Payload) -> Result<Vec<u8>, Refusal> {
        source::decode(&payload.raw).map_err(|err| Refusal {
            reason: "decode",
            message: error_chain(&err),
            digest: digest(&payload.raw),
            transient: false,
        })
    }

    /// Checks a decoded module, of digest `candidate`, against the trust policy
    /// (step 2); returns the signer's fingerprint.
    fn trusted(&self, bytes: &[u8], candidate: &str, payload: &Payload) -> Result<Option<String>, Refusal> {
        self.trust.check(bytes, candidate, &payload.signatures).map_err(|untrusted| Refusal {
            reason: untrusted.reason(),
            message: error_chain(&untrusted),
            digest: candidate.to_owned(),
            transient: false,
        })
    }

    /// Validates a decoded module of digest `candidate` (step 3): the runtime's checks,
    /// then the policy.
    async fn validate(&self, bytes: Vec<u8>, candidate: String) -> Result<Arc<LoadedModule>, Refusal> {
        let loaded = self.engine.load_async(bytes).await.map_err(|err| Refusal {
            reason: load_reason(&err),
            message: error_chain(&err),
            digest: candidate.clone(),
            transient: !err.is_module_fault(),
        })?;
        self.policy.check_manifest(loaded.manifest()).map_err(|violation| Refusal {
            reason: "policy",
            message: violation.to_string(),
            digest: candidate,
            transient: false,
        })?;
        Ok(loaded)
    }

    /// Decodes, trusts and validates one payload (steps 1 to 3).
    async fn accept(&self, payload: &Payload) -> Result<(Arc<LoadedModule>, Option<String>), Refusal> {
        let bytes = Self::decode(payload)?;
        // Hashed once: a module may be 64 MiB.
        let candidate = digest(&bytes);
        let signer = self.trusted(&bytes, &candidate, payload)?;
        Ok((self.validate(bytes, candidate).await?, signer))
    }

    /// Keeps an accepted payload, as stored (gzip or not), with its signature, for
    /// [`Swapper::last_good`] (with the compiled-module cache; nowhere without one).
    fn keep_last_good(&self, payload: &Payload) {
        if let Some(cache) = self.engine.cache() {
            cache.store_last_good(&payload.raw, &payload.signatures);
        }
    }

    /// The last module this host accepted, checked again, when the source holds
    /// nothing valid at start (`why`); `None` when there is none or it fails now.
    async fn last_good(&self, why: &str, refused: Option<&Payload>) -> Option<Accepted> {
        let cache = self.engine.cache()?;
        let (raw, signatures) = cache.last_good()?;
        let origin = format!("the last good module in {}", cache.dir().display());
        let payload = Payload { raw, origin: origin.clone(), reference: None, signatures };
        match self.accept(&payload).await {
            Ok((loaded, signer)) => {
                let note = format!(
                    "the module source holds no valid module ({why}): starting from the last good module {} {} ({}); it serves until the source holds a valid one",
                    loaded.manifest().name,
                    loaded.manifest().version,
                    loaded.digest()
                );
                tracing::warn!("{note}");
                if let Some(refused) = refused {
                    self.event(refused, EventType::Warning, "LastGoodModule", &note).await;
                }
                Some(Accepted {
                    module: Arc::new(WasmModule::new(loaded, self.caller.clone())),
                    origin,
                    signer,
                })
            }
            Err(refusal) => {
                tracing::warn!(
                    reason = refusal.reason,
                    "the last good module is refused too: {}",
                    refusal.message
                );
                None
            }
        }
    }

    /// Waits for the first module the source offers that validates: the start of a
    /// ConfigMap source. Refused candidates are reported as during a swap; a missing
    /// ConfigMap or key is logged (once per change). When the source holds nothing
    /// valid, the host starts from the last module it accepted, if it kept one (with a
    /// Warning); otherwise it waits, and reconciles nothing until then.
    pub async fn first_module(&mut self, rx: &mut channel::Receiver<SourceState>) -> Option<Accepted> {
        let mut tried_last_good = false;
        loop {
            let state = rx.borrow_and_update().clone();
            match state {
                SourceState::Unknown => {}
                SourceState::Missing(why) => {
                    if !tried_last_good {
                        tried_last_good = true;
                        if let Some(found) = self.last_good(&why, None).await {
                            return Some(found);
                        }
                    }
                    self.missing(&why, "waiting for it before reconciling");
                }
                SourceState::Present(payload) => {
                    let identity = payload.identity();
                    if self.last_seen.as_deref() != Some(identity.as_str()) {
                        self.last_seen = Some(identity);
                        match self.accept(&payload).await {
                            Ok((loaded, signer)) => {
                                self.keep_last_good(&payload);
                                let manifest = loaded.manifest();
                                tracing::info!(name = %manifest.name, version = %manifest.version, digest = %loaded.digest(), origin = %payload.origin, "module loaded");
                                self.event(
                                    &payload,
                                    EventType::Normal,
                                    "ModuleActivated",
                                    &activated_note(&loaded, signer.as_deref()),
                                )
                                .await;
                                let module = Arc::new(WasmModule::new(loaded, self.caller.clone()));
                                return Some(Accepted { module, origin: payload.origin, signer });
                            }
                            Err(refusal) => {
                                self.refused(&payload, &refusal, None).await;
                                if !tried_last_good {
                                    tried_last_good = true;
                                    let why = format!("{} refused it ({})", payload.origin, refusal.reason);
                                    if let Some(found) = self.last_good(&why, Some(&payload)).await {
                                        return Some(found);
                                    }
                                }
                                tracing::warn!("still waiting for a valid module");
                            }
                        }
                    }
                }
            }
            if rx.changed().await.is_err() {
                return None;
            }
        }
    }

    /// Handles the source's states until the source ends: each new module version is
    /// validated and swapped in, or refused.
    pub async fn run(mut self, mut rx: channel::Receiver<SourceState>, target: SwapTarget) {
        // The payload refused for a transient reason, how many times, and when to try
        // it again; a new payload starts over.
        let mut retry: Option<(String, u32, tokio::time::Instant)> = None;
        loop {
            let state = rx.borrow_and_update().clone();
            match state {
                SourceState::Unknown => retry = None,
                SourceState::Missing(why) => {
                    retry = None;
                    self.missing(&why, "the active module keeps serving");
                }
                SourceState::Present(payload) => {
                    self.last_missing = None;
                    let raw = payload.identity();
                    if self.last_seen.as_deref() != Some(raw.as_str()) {
                        self.last_seen = Some(raw.clone());
                        let tries =
                            retry.take().filter(|(of, ..)| *of == raw).map_or(0, |(_, tries, _)| tries);
                        if let Err(refusal) = self.offer(&payload, &target).await
                            && refusal.transient
                        {
                            let delay = retry_delay(tries.saturating_add(1));
                            tracing::info!(
                                reason = refusal.reason,
                                "trying the candidate again in {}s",
                                delay.as_secs()
                            );
                            retry = Some((raw, tries.saturating_add(1), tokio::time::Instant::now() + delay));
                        }
                    }
                }
            }
            let retry_at = retry.as_ref().map(|(_, _, at)| *at);
            tokio::select! {
                changed = rx.changed() => {
                    if changed.is_err() {
                        return;
                    }
                }
                () = tokio::time::sleep_until(retry_at.unwrap_or_else(tokio::time::Instant::now)), if retry_at.is_some() => {
                    // The same payload, looked at again.
                    self.last_seen = None;
                }
            }
        }
    }

    fn missing(&mut self, why: &str, consequence: &str) {
        if self.last_missing.as_deref() != Some(why) {
            tracing::warn!("no module at the module source: {why}; {consequence}");
            self.last_missing = Some(why.to_owned());
            // The same version coming back is a change worth validating again.
            self.last_seen = None;
        }
    }

    /// Validates `payload` and swaps it in, or reports why not (and returns the
    /// refusal).
    pub async fn offer(&mut self, payload: &Payload, target: &SwapTarget) -> Result<(), Refusal> {
        let current = target.active.current();
        match self.swap(payload, target, &current).await {
            Ok(None) => {
                tracing::debug!(origin = %payload.origin, "the module source holds the active module");
                Ok(())
            }
            Ok(Some(info)) => {
                let old = current.module.manifest();
                let new = info.module.manifest();
                tracing::info!(
                    name = %new.name,
                    version = %new.version,
                    digest = %info.module.digest(),
                    previous_version = %old.version,
                    previous_digest = %current.module.digest(),
                    origin = %payload.origin,
                    "module swapped"
                );
                Ok(())
            }
            Err(refusal) => {
                self.refused(payload, &refusal, Some(&target.active)).await;
                Err(refusal)
            }
        }
    }

    async fn swap(
        &self,
        payload: &Payload,
        target: &SwapTarget,
        current: &LoadedModuleInfo,
    ) -> Result<Option<Arc<LoadedModuleInfo>>, Refusal> {
        let bytes = Self::decode(payload)?;
        // Cheap before the validation: the same module again is no swap.
        let candidate = digest(&bytes);
        if candidate == current.module.digest() {
            return Ok(None);
        }
        let signer = self.trusted(&bytes, &candidate, payload)?;
        let loaded = self.validate(bytes, candidate).await?;
        let candidate = loaded.digest().to_owned();
        let refuse =
            |reason, message| Refusal { reason, message, digest: candidate.clone(), transient: false };
        let retry = |reason, message| Refusal { transient: true, ..refuse(reason, message) };
        let old = current.module.manifest();
        let new = loaded.manifest();
        let carried = target.controller.wiring().watches.caches.primary_finalizers();
        check_identity(old, new, &carried).map_err(|(reason, message)| refuse(reason, message))?;

        let missing =
            self.missing_rights(old, new, target.scope.namespace.as_deref()).await.map_err(|err| {
                retry(
                    "rights",
                    format!("cannot check the rights the new manifest needs: {}", error_chain(&err)),
                )
            })?;
        if !missing.is_empty() {
            return Err(refuse(
                "rights",
                format!("the new manifest needs rights the operator does not hold: {}", missing.join("; ")),
            ));
        }

        let wiring = if needs_new_wiring(old, new) {
            tracing::info!(name = %new.name, version = %new.version, "the new manifest changes the watched kinds: starting new watches");
            Some(
                self.wire(new, target).await.map_err(|(reason, message, transient)| Refusal {
                    transient,
                    ..refuse(reason, message)
                })?,
            )
        } else {
            None
        };

        // The commit: wiring, then module, then everyone once.
        if let Some(wiring) = wiring {
            target.controller.set_wiring(wiring);
        }
        let module: Arc<dyn Module> = Arc::new(WasmModule::new(loaded.clone(), self.caller.clone()));
        let note = activated_note(&loaded, signer.as_deref());
        let info = target.active.store_from(module, Some(payload.origin.clone()), signer.clone());
        self.metrics.set_module(
            ModuleLabels {
                name: new.name.clone(),
                version: new.version.clone(),
                digest: candidate.clone(),
                source: payload.origin.clone(),
                signer: signer.unwrap_or_default(),
            },
            info.loaded_at,
        );
        self.metrics.module_swaps.inc();
        self.keep_last_good(payload);
        let queue = target.controller.queue();
        for key in target.controller.wiring().watches.caches.primary_keys() {
            queue.enqueue(key, Cause::Swap);
        }
        self.event(payload, EventType::Normal, "ModuleActivated", &note).await;
        Ok(Some(info))
    }

    /// The rights `new` needs that `old` did not, and that a SelfSubjectAccessReview
    /// denies, as readable lines.
    async fn missing_rights(
        &self,
        old: &Manifest,
        new: &Manifest,
        namespace: Option<&str>,
    ) -> Result<Vec<String>, kube::Error> {
        let held = crate::policy::rbac::access_checks(old, namespace);
        let checks: Vec<_> = crate::policy::rbac::access_checks(new, namespace)
            .into_iter()
            .filter(|c| !held.contains(c))
            .collect();
        let api: Api<SelfSubjectAccessReview> = Api::all(self.client.clone());
        let reviews = checks.iter().map(|check| {
            let api = api.clone();
            let review = SelfSubjectAccessReview {
                spec: SelfSubjectAccessReviewSpec {
                    resource_attributes: Some(check.resource_attributes()),
                    ..SelfSubjectAccessReviewSpec::default()
                },
                ..SelfSubjectAccessReview::default()
            };
            async move { api.create(&PostParams::default(), &review).await }
        });
        let answers = futures::future::join_all(reviews).await;
        let mut missing = Vec::new();
        for (check, answer) in checks.iter().zip(answers) {
            if !answer?.status.is_some_and(|s| s.allowed) {
                missing.push(check.to_string());
            }
        }
        Ok(missing)
    }

    /// Discovers `manifest`'s kinds, starts its watches and waits for their initial
    /// lists. Both fail for the cluster's reasons (an API error, a CRD not installed
    /// yet, a watch that cannot list yet), worth retrying, except a cluster-scoped kind.
    /// The error is (reason, message, transient).
    async fn wire(
        &self,
        manifest: &Manifest,
        target: &SwapTarget,
    ) -> Result<Wiring, (&'static str, String, bool)> {
        let kinds =
            KindRegistry::discover(&target.client, &target.server, manifest).await.map_err(|err| {
                let transient = !matches!(err, DiscoveryError::NotNamespaced { .. });
                ("discovery", error_chain(&err), transient)
            })?;
        let kinds = Arc::new(kinds);
        let watches = watches::start(
            target.client.clone(),
            target.server.clone(),
            manifest,
            kinds.clone(),
            target.scope.clone(),
            target.controller.queue().clone(),
            SyncState::new(self.sync_timeout, self.metrics.watches_overdue.clone()),
        );
        let synced = tokio::time::timeout(self.sync_timeout, async {
            while !watches.caches.synced() {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await;
        if synced.is_err() {
            // Dropping the watches stops them.
            return Err((
                "sync",
                format!(
                    "the new manifest's watches did not deliver their initial lists within {}s (see the watch errors in the log)",
                    self.sync_timeout.as_secs()
                ),
                true,
            ));
        }
        let executor = Executor::new(
            target.client.clone(),
            kinds,
            manifest,
            target.instance.clone(),
            self.metrics.clone(),
        );
        Ok(Wiring { watches, executor })
    }

    async fn refused(&self, payload: &Payload, refusal: &Refusal, active: Option<&ActiveModule>) {
        tracing::warn!(
            reason = refusal.reason,
            digest = %refusal.digest,
            origin = %payload.origin,
            "module rejected, the active module keeps serving: {}",
            refusal.message
        );
        self.metrics.module_rejection(refusal.reason);
        if let Some(active) = active {
            active.rejected(ModuleRejection {
                digest: refusal.digest.clone(),
                reason: refusal.reason,
                message: refusal.message.clone(),
                origin: payload.origin.clone(),
                at: SystemTime::now(),
            });
        }
        let note = format!("module {} rejected ({}): {}", refusal.digest, refusal.reason, refusal.message);
        self.event(payload, EventType::Warning, "ModuleRejected", &note).await;
    }

    /// An event on the payload's ConfigMap (file sources have none).
    async fn event(&self, payload: &Payload, event_type: EventType, reason: &str, note: &str) {
        let Some(reference) = &payload.reference else { return };
        let event = Event {
            type_: event_type,
            reason: reason.to_owned(),
            note: Some(crate::execute::event_note(note).to_owned()),
            action: "HotSwap".to_owned(),
            secondary: None,
        };
        if let Err(err) = self.recorder.publish(&event, reference).await {
            tracing::warn!(
                "cannot record the {reason} event on {}: {}",
                describe(reference),
                error_chain(&err)
            );
        }
    }
}

fn activated_note(loaded: &LoadedModule, signer: Option<&str>) -> String {
    let manifest = loaded.manifest();
    let signed = signer.map(|key| format!(", signed by key {key}")).unwrap_or_default();
    format!("module {} {} ({}{signed}) is active", manifest.name, manifest.version, loaded.digest())
}

fn describe(reference: &ObjectReference) -> String {
    format!(
        "{} {}/{}",
        reference.kind.as_deref().unwrap_or("object"),
        reference.namespace.as_deref().unwrap_or_default(),
        reference.name.as_deref().unwrap_or_default()
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use reconcile_sdk::KindRef;

    fn kind(kind: &str) -> KindRef {
        KindRef {
            api_version: "v1".into(),
            kind: kind.into(),
            plural: format!("{}s", kind.to_lowercase()),
            optional: false,
            digest_only: false,
        }
    }

    fn manifest() -> Manifest {
        Manifest {
            abi: 1,
            name: "m".into(),
            version: "1".into(),
            primary: kind("Thing"),
            related: vec![kind("ConfigMap")],
            reads: vec![],
            owner_label: "example.com/owner".into(),
            field_manager: "m".into(),
            finalizers: vec![],
        }
    }

    #[test]
    fn only_kind_and_writer_changes_need_new_watches() {
        let old = manifest();
        let mut same_kinds = old.clone();
        same_kinds.version = "2".into();
        same_kinds.name = "renamed".into();
        same_kinds.finalizers = vec!["example.com/f".into()];
        assert!(!needs_new_wiring(&old, &same_kinds));
        let mut related = old.clone();
        related.related.push(kind("Service"));
        assert!(needs_new_wiring(&old, &related));
        let mut reads = old.clone();
        reads.reads.push(kind("Secret"));
        assert!(needs_new_wiring(&old, &reads));
        let mut label = old.clone();
        label.owner_label = "example.com/other".into();
        assert!(needs_new_wiring(&old, &label));
    }

    #[test]
    fn transient_refusals_are_retried_with_a_doubling_bounded_delay() {
        let delays: Vec<u64> = (1..=9).map(|attempt| retry_delay(attempt).as_secs()).collect();
        assert_eq!(delays, [5, 10, 20, 40, 80, 160, 300, 300, 300]);
        assert_eq!(retry_delay(u32::MAX), RETRY_MAX);
    }

    #[test]
    fn load_errors_map_to_bounded_reasons() {
        assert_eq!(load_reason(&LoadError::WrongAbi { found: 2 }), "abi");
        assert_eq!(load_reason(&LoadError::Imports { imports: vec!["env::f (function)".into()] }), "imports");
        assert_eq!(load_reason(&LoadError::Task("x".into())), "internal");
    }

    #[test]
    fn a_swap_cannot_change_the_identity_or_drop_a_carried_finalizer() {
        let old = Manifest { finalizers: vec!["example.com/cleanup".into()], ..manifest() };
        assert_eq!(check_identity(&old, &old, &["example.com/cleanup".into()]), Ok(()));
        let cases = [
            (Manifest { owner_label: "example.com/other".into(), ..old.clone() }, "identity", "ownerLabel"),
            (Manifest { field_manager: "kubectl".into(), ..old.clone() }, "identity", "fieldManager"),
            (Manifest { primary: kind("Other"), ..old.clone() }, "identity", "primary kind"),
            (
                Manifest { finalizers: vec!["example.com/renamed".into()], ..old.clone() },
                "finalizer",
                "\"example.com/cleanup\"",
            ),
        ];
        for (new, reason, text) in cases {
            let (got, message) = check_identity(&old, &new, &["example.com/cleanup".into()]).expect_err(text);
            assert_eq!(got, reason);
            assert!(message.contains(text), "{message}");
        }
        // A finalizer no primary carries any more may go; a new one may come.
        let renamed = Manifest { finalizers: vec!["example.com/renamed".into()], ..old.clone() };
        assert_eq!(check_identity(&old, &renamed, &["example.com/unrelated".into()]), Ok(()));
    }
}
