//! The HTTP APIs: the service-provider REST API (BSI TR-03165 model: `auth`, `sp`,
//! `instances`), the admin API (`admin`, onboarding), and the device API (`seram`, GP SERAM).
//!
//! Every provider and admin route is declared with `utoipa::path` and registered through
//! [`utoipa_axum`], so the OpenAPI document ([`openapi`], served at `/openapi.json`) is
//! generated from the same declarations as the router and cannot miss a route.

pub mod admin;
pub mod auth;
pub mod dto;
pub mod error;
pub mod instances;
pub mod sealing;
pub mod seram;
pub mod sp;

use crate::app::AppState;
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
use utoipa::{Modify, OpenApi};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

#[derive(OpenApi)]
#[openapi(
    info(
        title = "tsm — service-provider API",
        description = "REST API of the tsm Trusted Service Manager for service providers (after BSI TR-03165 \
                       TSM-Backend and TSM-API), and its admin (onboarding) API. Every error is \
                       `{\"code\": \"...\", \"message\": \"...\"}` with a stable code.",
    ),
    modifiers(&Security),
    components(schemas(error::ErrorBody)),
    tags(
        (name = "auth", description = "Short-term bearer tokens from the long-term token"),
        (name = "serviceproviders", description = "The provider's account and audit log"),
        (name = "services", description = "Services, versions and flavors"),
        (name = "application-configs", description = "Applications of a flavor"),
        (name = "personalization-scripts", description = "STORE DATA scripts"),
        (name = "executable-load-files", description = "CAP files"),
        (name = "security-domains", description = "The provider's SSDs"),
        (name = "service-instances", description = "Services on SEs; deploy, update, suspend, resume, terminate"),
        (name = "processes", description = "Progress and APDU logs of operations"),
        (name = "admin", description = "Onboarding (admin token)"),
    )
)]
struct ApiDoc;

struct Security;

impl Modify for Security {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let c = openapi.components.get_or_insert_with(Default::default);
        let bearer = |desc: &str| {
            let mut h = Http::new(HttpAuthScheme::Bearer);
            h.description = Some(desc.to_string());
            SecurityScheme::Http(h)
        };
        c.add_security_scheme("longTermToken", bearer("The provider's long-term token (POST /api/v1/auth only)"));
        c.add_security_scheme("bearer", bearer("A short-term token from POST /api/v1/auth"));
        c.add_security_scheme("adminToken", bearer("The admin token of the server configuration"));
    }
}

/// The provider and admin routes with their OpenAPI document (state not yet applied).
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(auth::create_access_token))
        .routes(routes!(sp::get_current))
        .routes(routes!(sp::put_current))
        .routes(routes!(sp::list_audit))
        .routes(routes!(sp::create_service))
        .routes(routes!(sp::list_services))
        .routes(routes!(sp::get_service))
        .routes(routes!(sp::put_service))
        .routes(routes!(sp::delete_service))
        .routes(routes!(sp::create_version))
        .routes(routes!(sp::list_versions))
        .routes(routes!(sp::get_version))
        .routes(routes!(sp::delete_version))
        .routes(routes!(sp::create_flavor))
        .routes(routes!(sp::list_flavors))
        .routes(routes!(sp::get_flavor))
        .routes(routes!(sp::delete_flavor))
        .routes(routes!(sp::create_application_config))
        .routes(routes!(sp::list_application_configs))
        .routes(routes!(sp::get_application_config))
        .routes(routes!(sp::delete_application_config))
        .routes(routes!(sp::create_perso_script))
        .routes(routes!(sp::list_perso_scripts))
        .routes(routes!(sp::get_perso_script))
        .routes(routes!(sp::delete_perso_script))
        .routes(routes!(sp::upload_elf))
        .routes(routes!(sp::list_elfs))
        .routes(routes!(sp::get_elf))
        .routes(routes!(sp::get_elf_binary))
        .routes(routes!(sp::delete_elf))
        .routes(routes!(sp::list_security_domains))
        .routes(routes!(sp::get_security_domain))
        .routes(routes!(instances::create_instance))
        .routes(routes!(instances::list_instances))
        .routes(routes!(instances::get_instance))
        .routes(routes!(instances::deploy))
        .routes(routes!(instances::update))
        .routes(routes!(instances::suspend))
        .routes(routes!(instances::resume))
        .routes(routes!(instances::terminate))
        .routes(routes!(instances::list_processes))
        .routes(routes!(instances::get_process))
        .routes(routes!(instances::get_process_apdus))
        .routes(routes!(admin::create_service_provider))
        .routes(routes!(admin::list_service_providers))
        .routes(routes!(admin::create_long_term_token))
        .routes(routes!(admin::create_issuer))
        .routes(routes!(admin::list_issuers))
        .routes(routes!(admin::create_secure_element))
        .routes(routes!(admin::get_secure_element))
        .routes(routes!(admin::create_security_domain))
        .routes(routes!(admin::get_process))
        .routes(routes!(admin::get_process_apdus))
        .routes(routes!(admin::list_audit))
}

/// The OpenAPI document of the provider and admin APIs.
pub fn openapi() -> utoipa::openapi::OpenApi {
    router().into_openapi()
}
