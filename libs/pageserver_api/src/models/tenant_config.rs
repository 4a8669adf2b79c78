//! Per-tenant configuration: overrides as sent over the API ([`TenantConfig`]) and the values
//! in force ([`EffectiveTenantConfig`]).

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::duration_serde;

const MIB: u64 = 1024 * 1024;

/// Overrides of a tenant's settings; an absent field takes the default (see
/// [`EffectiveTenantConfig::DEFAULT`]). Sizes are bytes, durations humantime strings.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TenantConfig {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checkpoint_distance: Option<u64>,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "duration_serde::option"
    )]
    pub checkpoint_timeout: Option<Duration>,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "duration_serde::option"
    )]
    pub compaction_period: Option<Duration>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub compaction_threshold: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub compaction_upper_limit: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub compaction_target_size: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_creation_threshold: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gc_horizon: Option<u64>,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "duration_serde::option"
    )]
    pub gc_period: Option<Duration>,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "duration_serde::option"
    )]
    pub pitr_interval: Option<Duration>,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "duration_serde::option"
    )]
    pub lsn_lease_length: Option<Duration>,
}

/// The settings in force for a tenant.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EffectiveTenantConfig {
    /// Roll the open in-memory layer once this many bytes of WAL have arrived since it was
    /// opened (or it holds this many bytes). Default 64 MiB (Neon: 256 MiB).
    pub checkpoint_distance: u64,
    /// Roll a non-empty open in-memory layer after this long. Default 10 min.
    #[serde(with = "duration_serde")]
    pub checkpoint_timeout: Duration,
    /// How often background compaction runs; 0 disables it. Default 20 s.
    #[serde(with = "duration_serde")]
    pub compaction_period: Duration,
    /// Compact L0 layers into L1 once there are this many. Default 10.
    pub compaction_threshold: usize,
    /// Most L0 layers one compaction takes. Default 20.
    pub compaction_upper_limit: usize,
    /// Target size of the layer files compaction writes. Default 64 MiB (Neon: 128 MiB).
    pub compaction_target_size: u64,
    /// Create image layers for a key range once this many deltas stack on its newest image.
    /// Default 3.
    pub image_creation_threshold: usize,
    /// Keep the history of the last this many bytes of WAL. Default 64 MiB.
    pub gc_horizon: u64,
    /// How often background GC runs; 0 disables it. Default 1 h.
    #[serde(with = "duration_serde")]
    pub gc_period: Duration,
    /// Keep history of at least this long (point-in-time recovery window); when set (non-zero)
    /// GC keeps the older of the two cutoffs. Default 1 day (Neon: 7 days).
    #[serde(with = "duration_serde")]
    pub pitr_interval: Duration,
    /// How long an LSN lease protects an LSN from GC. Default 10 min.
    #[serde(with = "duration_serde")]
    pub lsn_lease_length: Duration,
}

/// Why a configuration is unusable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TenantConfigError {
    #[error("{field} must be at least {min}, got {value}")]
    TooSmall {
        field: &'static str,
        min: u64,
        value: u64,
    },
    #[error("compaction_upper_limit ({upper}) is below compaction_threshold ({threshold})")]
    UpperLimitBelowThreshold { upper: usize, threshold: usize },
}

impl EffectiveTenantConfig {
    /// The defaults documented on each field.
    pub const DEFAULT: EffectiveTenantConfig = EffectiveTenantConfig {
        checkpoint_distance: 64 * MIB,
        checkpoint_timeout: Duration::from_secs(10 * 60),
        compaction_period: Duration::from_secs(20),
        compaction_threshold: 10,
        compaction_upper_limit: 20,
        compaction_target_size: 64 * MIB,
        image_creation_threshold: 3,
        gc_horizon: 64 * MIB,
        gc_period: Duration::from_secs(60 * 60),
        pitr_interval: Duration::from_secs(24 * 60 * 60),
        lsn_lease_length: Duration::from_secs(10 * 60),
    };

    /// Checks the values that would break the pageserver's loops.
    pub fn validate(&self) -> Result<(), TenantConfigError> {
        let at_least = |field: &'static str, value: u64, min: u64| {
            if value < min {
                Err(TenantConfigError::TooSmall { field, min, value })
            } else {
                Ok(())
            }
        };
        at_least("checkpoint_distance", self.checkpoint_distance, 8192)?;
        at_least("checkpoint_timeout", self.checkpoint_timeout.as_secs(), 1)?;
        at_least("compaction_threshold", self.compaction_threshold as u64, 1)?;
        at_least("compaction_target_size", self.compaction_target_size, 8192)?;
        at_least(
            "image_creation_threshold",
            self.image_creation_threshold as u64,
            1,
        )?;
        if self.compaction_upper_limit < self.compaction_threshold {
            return Err(TenantConfigError::UpperLimitBelowThreshold {
                upper: self.compaction_upper_limit,
                threshold: self.compaction_threshold,
            });
        }
        Ok(())
    }
}

impl Default for EffectiveTenantConfig {
    fn default() -> Self {
        EffectiveTenantConfig::DEFAULT
    }
}

impl TenantConfig {
    /// The settings in force: these overrides over [`EffectiveTenantConfig::DEFAULT`].
    pub fn effective(&self) -> EffectiveTenantConfig {
        self.apply_to(&EffectiveTenantConfig::DEFAULT)
    }

    /// These overrides over `base` (e.g. defaults from the pageserver's own configuration).
    pub fn apply_to(&self, base: &EffectiveTenantConfig) -> EffectiveTenantConfig {
        EffectiveTenantConfig {
            checkpoint_distance: self.checkpoint_distance.unwrap_or(base.checkpoint_distance),
            checkpoint_timeout: self.checkpoint_timeout.unwrap_or(base.checkpoint_timeout),
            compaction_period: self.compaction_period.unwrap_or(base.compaction_period),
            compaction_threshold: self
                .compaction_threshold
                .unwrap_or(base.compaction_threshold),
            compaction_upper_limit: self
                .compaction_upper_limit
                .unwrap_or(base.compaction_upper_limit),
            compaction_target_size: self
                .compaction_target_size
                .unwrap_or(base.compaction_target_size),
            image_creation_threshold: self
                .image_creation_threshold
                .unwrap_or(base.image_creation_threshold),
            gc_horizon: self.gc_horizon.unwrap_or(base.gc_horizon),
            gc_period: self.gc_period.unwrap_or(base.gc_period),
            pitr_interval: self.pitr_interval.unwrap_or(base.pitr_interval),
            lsn_lease_length: self.lsn_lease_length.unwrap_or(base.lsn_lease_length),
        }
    }
}
