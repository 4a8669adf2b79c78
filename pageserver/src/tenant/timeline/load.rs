//! Scanning a timeline directory at load (see the load rule in the parent module).

use std::path::Path;

use pageserver_layers::ephemeral_file::is_ephemeral_file_name;
use pageserver_layers::layer_name::{LayerDesc, LayerName};
use utils::id::{TenantId, TimelineId};
use utils::lsn::Lsn;

use super::TimelineError;
use crate::metadata::METADATA_FILE_NAME;

/// The layer files of `dir` that are durable as of `dcl`; removes temporary files, ephemeral
/// files and layer files starting above `dcl`. Unknown files are left alone (logged).
pub(super) fn scan_layer_files(
    dir: &Path,
    tenant_id: TenantId,
    timeline_id: TimelineId,
    dcl: Lsn,
) -> Result<Vec<LayerDesc>, TimelineError> {
    let io = |source| TimelineError::Io {
        path: dir.to_path_buf(),
        source,
    };
    let mut descs = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(io)? {
        let entry = entry.map_err(io)?;
        let name = entry.file_name().to_string_lossy().into_owned();
        let path = entry.path();
        if name == METADATA_FILE_NAME || name == crate::walreceiver::WAL_SOURCE_FILE_NAME {
            continue;
        }
        let remove = |why: &str| -> Result<(), TimelineError> {
            tracing::info!("removing {why} file {}", path.display());
            utils::crashsafe::remove_file_durable(&path).map_err(|e| TimelineError::Io {
                path: path.clone(),
                source: std::io::Error::new(e.kind(), e.to_string()),
            })
        };
        if name.ends_with(utils::crashsafe::TEMP_FILE_SUFFIX) {
            remove("temporary")?;
            continue;
        }
        if is_ephemeral_file_name(&name) {
            remove("ephemeral")?;
            continue;
        }
        let Ok(layer_name) = name.parse::<LayerName>() else {
            tracing::warn!("ignoring unknown file {}", path.display());
            continue;
        };
        if layer_name.lsn_range().start > dcl {
            remove("non-durable layer")?;
            continue;
        }
        let size = entry.metadata().map_err(io)?.len();
        descs.push(LayerDesc {
            name: layer_name,
            file_size_bytes: size,
            tenant_id,
            timeline_id,
        });
    }
    Ok(descs)
}
