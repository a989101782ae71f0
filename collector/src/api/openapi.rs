//! The OpenAPI 3 document served at `/openapi.json`, generated from the handlers' annotations
//! and the types they take and answer (utoipa): nothing in it is written by hand.

use utoipa::openapi::OpenApi as Document;
use utoipa::openapi::schema::{AdditionalProperties, Object, OneOf, Schema};
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityRequirement, SecurityScheme};
use utoipa::openapi::{Content, Ref, RefOr, ResponseBuilder};
use utoipa::{Modify, OpenApi, ToSchema};

use super::problem::Problem;

#[derive(OpenApi)]
#[openapi(
    info(title = "Tally collector", description = "Usage reports, per-site caps and online orders (Contract)."),
    paths(
        super::healthz,
        super::account,
        super::recipients::list,
        super::recipients::add,
        super::recipients::remove,
        super::usage,
        super::usage_events,
        super::overusage_of_month,
        super::resolve_overusage,
        super::sites::change_site,
        super::sites::site_enforcement,
        super::sites::site_intake,
        super::sites::all_sites_activity,
        super::sites::account_sites_activity,
        super::sites::pools_at_risk,
        super::orders::create,
        super::orders::list,
        super::orders::one,
        super::orders::transition,
    ),
    modifiers(&BearerTokens, &ExactShapes)
)]
struct ApiDoc;

/// Every `/v1` route takes a bearer token (`token create`), and answers 401 without a valid one,
/// and 429 to an address that presented too many wrong ones lately.
struct BearerTokens;

impl Modify for BearerTokens {
    fn modify(&self, doc: &mut Document) {
        let components = doc.components.get_or_insert_with(Default::default);
        components.add_security_scheme("bearer", SecurityScheme::Http(Http::new(HttpAuthScheme::Bearer)));
        let unauthorized = ResponseBuilder::new()
            .description("No valid bearer token")
            .content("application/problem+json", Content::new(Some(Ref::from_schema_name(Problem::name()))))
            .build();
        let too_many = ResponseBuilder::new()
            .description("Too many wrong tokens from this address lately: try again after Retry-After seconds")
            .content("application/problem+json", Content::new(Some(Ref::from_schema_name(Problem::name()))))
            .build();
        for (path, item) in doc.paths.paths.iter_mut() {
            if !path.starts_with("/v1/") {
                continue;
            }
            for operation in [&mut item.get, &mut item.post, &mut item.patch, &mut item.delete].into_iter().flatten() {
                operation.security = Some(vec![SecurityRequirement::new("bearer", Vec::<String>::new())]);
                operation.responses.responses.insert("401".into(), unauthorized.clone().into());
                operation.responses.responses.insert("429".into(), too_many.clone().into());
            }
        }
    }
}

/// What the derived schemas cannot say by themselves, so that the document describes exactly
/// what the server accepts and client generators can use it:
/// - an order item (`OrderItem`) is one complete object per item type (`oneOf`), not an `allOf`
///   over the `oneOf` of `Item` (which generators such as openapi-python-client refuse);
/// - request bodies refuse fields they do not know (`additionalProperties: false`);
/// - a site's country is one of the region table's (R11), restricted countries left out.
struct ExactShapes;

/// Request bodies whose unknown fields the server refuses.
const CLOSED: &[&str] =
    &["Item", "NewOrderBody", "TransitionBody", "Quote", "ResolveRequest", "SitePatch", "RecipientView"];

impl Modify for ExactShapes {
    fn modify(&self, doc: &mut Document) {
        let Some(components) = doc.components.as_mut() else { return };
        let schemas = &mut components.schemas;
        if let (Some(RefOr::T(Schema::OneOf(item))), Some(RefOr::T(Schema::AllOf(order_item)))) =
            (schemas.get("Item"), schemas.get("OrderItem"))
        {
            let common = order_item.items.iter().find_map(|s| match s {
                RefOr::T(Schema::Object(o)) => Some(o.clone()),
                _ => None,
            });
            let mut one_of = OneOf::new();
            one_of.description = order_item.description.clone();
            for variant in &item.items {
                if let (RefOr::T(Schema::Object(v)), Some(common)) = (variant, &common) {
                    let mut complete = v.clone();
                    complete.properties.extend(common.properties.clone());
                    complete.required.extend(common.required.iter().cloned());
                    one_of.items.push(RefOr::T(Schema::Object(complete)));
                }
            }
            name_variants(&mut one_of, "OrderItem");
            schemas.insert("OrderItem".into(), RefOr::T(Schema::OneOf(one_of)));
        }
        for (name, suffix) in [("Item", "Item"), ("ResolveRequest", "")] {
            if let Some(RefOr::T(Schema::OneOf(one_of))) = schemas.get_mut(name) {
                name_variants(one_of, suffix);
            }
        }
        for name in CLOSED {
            match schemas.get_mut(*name) {
                Some(RefOr::T(Schema::Object(o))) => close(o),
                Some(RefOr::T(Schema::OneOf(one_of))) => one_of.items.iter_mut().for_each(|v| {
                    if let RefOr::T(Schema::Object(o)) = v {
                        close(o);
                    }
                }),
                _ => {}
            }
        }
        if let Some(RefOr::T(Schema::Object(patch))) = schemas.get_mut("SitePatch")
            && let Some(RefOr::T(Schema::Object(country))) = patch.properties.get_mut("country")
        {
            let table = tally_common::region::RegionTable::builtin();
            let mut codes: Vec<serde_json::Value> = table.countries().map(|c| c.as_str().into()).collect();
            codes.push(serde_json::Value::Null);
            country.enum_values = Some(codes);
        }
    }
}

/// Titles each variant of a tagged `oneOf` after its `type` (`sockets` → `SocketsItem`), so that
/// generated clients name their classes after them.
fn name_variants(one_of: &mut OneOf, suffix: &str) {
    for variant in &mut one_of.items {
        let RefOr::T(Schema::Object(o)) = variant else { continue };
        let tag = match o.properties.get("type") {
            Some(RefOr::T(Schema::Object(t))) => t.enum_values.as_ref().and_then(|v| v.first()?.as_str()),
            _ => None,
        };
        if let Some(tag) = tag {
            let camel: String = tag.split('_').map(|word| word[..1].to_uppercase() + &word[1..]).collect();
            o.title = Some(format!("{camel}{suffix}"));
        }
    }
}

fn close(object: &mut Object) {
    object.additional_properties = Some(Box::new(AdditionalProperties::FreeForm(false)));
}

/// The document.
pub(super) fn document() -> Document {
    ApiDoc::openapi()
}
