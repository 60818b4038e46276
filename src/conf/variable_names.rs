//! The nginx variables this configuration defines, for `user_key: var:NAME`
//! (`migration_engine::variables`): taken once in postconfiguration, when nginx
//! still holds every defined variable's name (`variables_keys`: `set`, `map`,
//! `geo`, `auth_request_set`, the modules' own) and the prefixed families
//! (`http_`, `cookie_`, `arg_`, ...). `nginx -t`, start and reload check the file
//! against them; the compile thread checks each `watch=` change against the
//! same copy.

use migration_engine::variables::VariableNames;
use ngx::ffi::{ngx_hash_key_t, ngx_http_core_main_conf_t, ngx_http_variable_t};

/// The variables of the http block being configured.
///
/// # Safety
/// `cmcf` is the http core main configuration, between the end of the http
/// block's parsing and `ngx_http_variables_init_vars` (postconfiguration), while
/// `variables_keys` is still allocated.
pub unsafe fn of_configuration(cmcf: &ngx_http_core_main_conf_t) -> VariableNames {
    // SAFETY: (caller) variables_keys is live during postconfiguration; its `keys`
    // array holds ngx_hash_key_t, prefix_variables holds ngx_http_variable_t.
    let (keys, prefixes): (&[ngx_hash_key_t], &[ngx_http_variable_t]) = unsafe {
        (cmcf.variables_keys.as_ref().map_or(&[][..], |k| k.keys.as_slice()), cmcf.prefix_variables.as_slice())
    };
    VariableNames::new(
        keys.iter().map(|k| k.key.as_bytes().to_vec()),
        prefixes.iter().map(|v| v.name.as_bytes().to_vec()),
    )
}
