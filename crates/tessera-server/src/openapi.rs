//! The API's OpenAPI 3.1 document, generated with `utoipa` from the handlers' annotations and the
//! wire types of `tessera-api` (their `ToSchema` derives, behind its `openapi` feature), served at
//! `GET /openapi.json` and committed as `docs/openapi.json` (a test fails when the two differ).
//!
//! Every error answer has the one JSON shape [`api::ApiError`]; each operation lists the error
//! statuses it can answer with ([`Errors`] for the common set).

use std::collections::BTreeMap;

use axum::Json;
use axum::response::IntoResponse;
use tessera_api as api;
use utoipa::openapi::Ref;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{RefOr, Response, ResponseBuilder};
use utoipa::{IntoResponses, Modify, OpenApi};

/// The document.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "Tessera commitment server",
        description = "The always-on co-signing party of Tessera wallets: device registry and \
                       authentication, key generation, signing, refresh and resharing sessions \
                       (created here, run over `GET /ws`), policies and approvals, held actions, \
                       backups, bans, the audit log, durable signing requests with approval quorums, \
                       policy proposals, service accounts, webhooks, each device's event stream, \
                       and the operator's probes. Every error \
                       answer is an `ApiError`.",
        license(name = "MIT OR Apache-2.0"),
    ),
    modifiers(&Bearer),
    paths(
        crate::status,
        crate::observe::healthz,
        crate::observe::readyz,
        crate::observe::render_metrics,
        openapi_json,
        crate::registry::register,
        crate::registry::list,
        crate::registry::revoke,
        crate::registry::approve,
        crate::registry::challenge,
        crate::registry::token,
        crate::backups::recover,
        crate::backups::verify,
        crate::exports::server_share,
        crate::held::list,
        crate::held::decide,
        crate::wallets::keygen,
        crate::wallets::sign,
        crate::wallets::refresh,
        crate::reshare::reshare,
        crate::wallet_parties::accept,
        crate::wallet_parties::decline,
        crate::wallets::pubkey,
        crate::wallets::detail,
        crate::wallets::list,
        crate::coordinator::joinable,
        crate::ws::open,
        crate::ws::sign_socket,
        crate::relay::open,
        crate::policy::get,
        crate::policy::set,
        crate::policy::pending,
        crate::policy::decide,
        crate::policy::status,
        crate::audit::list,
        crate::audit::verify_endpoint,
        crate::bans::list,
        crate::bans::approve_lift,
        crate::requests::create,
        crate::requests::list,
        crate::requests::get,
        crate::requests::approve,
        crate::requests::refuse,
        crate::requests::session,
        crate::events::open,
        crate::policy_proposals::list,
        crate::policy_proposals::show,
        crate::policy_proposals::sign,
        crate::service_accounts::add,
        crate::service_accounts::list,
        crate::service_accounts::revoke,
        crate::service_accounts::challenge,
        crate::service_accounts::token,
        crate::webhooks::key,
    ),
    components(schemas(api::ApiError, api::SignSocketRequest))
)]
pub struct ApiDoc;

/// The security scheme of authenticated operations: a device's token from `POST /auth/token`.
struct Bearer;

impl Modify for Bearer {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("JWT")
                    .description(Some(
                        "A device's token: `POST /auth/challenge`, sign it with the device's \
                         identity key, `POST /auth/token`.",
                    ))
                    .build(),
            ),
        );
    }
}

/// The document, as served and committed.
#[must_use]
pub fn document() -> utoipa::openapi::OpenApi {
    ApiDoc::openapi()
}

/// The document as pretty JSON with a final newline (the committed file's form).
///
/// # Panics
/// Never: the document is plain data.
#[must_use]
pub fn pretty() -> String {
    let mut text = document()
        .to_pretty_json()
        .unwrap_or_else(|e| format!("{{\"error\": \"{e}\"}}"));
    text.push('\n');
    text
}

/// `GET /openapi.json`.
#[utoipa::path(get, path = "/openapi.json", tag = "operations",
    responses((status = 200, description = "This document", content_type = "application/json", body = Object)))]
pub(crate) async fn openapi_json() -> impl IntoResponse {
    Json(document())
}

/// One error answer of `status`, in the one shape.
fn error(description: &str) -> RefOr<Response> {
    ResponseBuilder::new()
        .description(description)
        .content(
            "application/json",
            utoipa::openapi::ContentBuilder::new()
                .schema(Some(RefOr::<utoipa::openapi::schema::Schema>::Ref(
                    Ref::from_schema_name("ApiError"),
                )))
                .build(),
        )
        .build()
        .into()
}

macro_rules! errors {
    ($(#[$doc:meta])* $name:ident { $($status:literal => $text:literal,)+ }) => {
        $(#[$doc])*
        pub(crate) struct $name;

        impl IntoResponses for $name {
            fn responses() -> BTreeMap<String, RefOr<Response>> {
                BTreeMap::from([$(($status.to_string(), error($text)),)+])
            }
        }
    };
}

errors! {
    /// What any operation may answer besides its own statuses: a malformed request, an
    /// unknown method, a body too large or of the wrong type, a rate limit, the server's fault.
    Errors {
        "400" => "The request is malformed or names something invalid (`bad_request`)",
        "405" => "Another method is expected (`method_not_allowed`)",
        "413" => "The body is too large (`payload_too_large`)",
        "415" => "The body is not JSON (`unsupported_media_type`)",
        "422" => "The JSON does not have the expected fields and types (`unprocessable`)",
        "429" => "A rate limit: wait for Retry-After (`rate_limited`)",
        "500" => "The server's fault; the details are in its log (`internal`)",
    }
}

errors! {
    /// What an authenticated operation answers besides [`Errors`].
    AuthErrors {
        "401" => "No token, an invalid or expired one, or a revoked device (`unauthorized`)",
        "403" => "The device is pending approval, or may not do this (`forbidden`)",
    }
}

errors! {
    /// Something named by the request does not exist (for this user).
    NotFound {
        "404" => "Not found for this user (`not_found`)",
    }
}

errors! {
    /// The request conflicts with the current state.
    Conflict {
        "409" => "It conflicts with the current state, e.g. a name in use, a session running (`conflict`)",
    }
}

errors! {
    /// The thing asked for existed but is over.
    Gone {
        "410" => "It has ended or expired (`gone`)",
    }
}

errors! {
    /// A WebSocket endpoint called without an upgrade.
    UpgradeRequired {
        "426" => "This endpoint needs a WebSocket upgrade (`upgrade_required`)",
    }
}

errors! {
    /// A signing request a policy refused.
    PolicyDenied {
        "403" => "Refused by the wallet's policy (`policy_denied`, with `rule`), or not allowed to this device (`forbidden`)",
    }
}
