//! The OpenAPI 3 document served at `/openapi.json`, generated from the handlers' annotations
//! and the types they take and answer (utoipa): nothing in it is written by hand.

use utoipa::openapi::OpenApi as Document;
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityRequirement, SecurityScheme};
use utoipa::openapi::{Content, Ref, ResponseBuilder};
use utoipa::{Modify, OpenApi, ToSchema};

use super::problem::Problem;

#[derive(OpenApi)]
#[openapi(
    info(title = "Tally collector", description = "Usage reports, per-site caps and online orders (Contract)."),
    paths(
        super::healthz,
        super::usage,
        super::usage_events,
        super::overusage_of_month,
        super::resolve_overusage,
        super::change_site,
        super::site_enforcement,
        super::orders::create,
        super::orders::list,
        super::orders::one,
        super::orders::transition,
    ),
    modifiers(&BearerTokens)
)]
struct ApiDoc;

/// Every `/v1` route takes a bearer token (`token create`), and answers 401 without a valid one.
struct BearerTokens;

impl Modify for BearerTokens {
    fn modify(&self, doc: &mut Document) {
        let components = doc.components.get_or_insert_with(Default::default);
        components.add_security_scheme("bearer", SecurityScheme::Http(Http::new(HttpAuthScheme::Bearer)));
        let unauthorized = ResponseBuilder::new()
            .description("No valid bearer token")
            .content("application/problem+json", Content::new(Some(Ref::from_schema_name(Problem::name()))))
            .build();
        for (path, item) in doc.paths.paths.iter_mut() {
            if !path.starts_with("/v1/") {
                continue;
            }
            for operation in [&mut item.get, &mut item.post, &mut item.patch].into_iter().flatten() {
                operation.security = Some(vec![SecurityRequirement::new("bearer", Vec::<String>::new())]);
                operation.responses.responses.insert("401".into(), unauthorized.clone().into());
            }
        }
    }
}

/// The document.
pub(super) fn document() -> Document {
    ApiDoc::openapi()
}
