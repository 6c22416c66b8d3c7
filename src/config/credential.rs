//! Entra ID credentials: `credential = { type = "workload_identity" }` or a
//! `[<section>.credential]` table, shared by `[eventhub]` and the storage keys.

use super::reader::{Ctx, Entry, Lookup, Section};
use crate::credential::{check_tenant_id, CredentialSpec};

const KEYS: &[&str] = &[
    "type",
    "client_id",
    "tenant_id",
    "client_secret",
    "client_secret_file",
];

#[derive(Clone, Copy)]
enum Kind {
    WorkloadIdentity,
    ManagedIdentity,
    AzureCli,
    ClientSecret,
}

const KINDS: &[(&str, Kind)] = &[
    ("workload_identity", Kind::WorkloadIdentity),
    ("managed_identity", Kind::ManagedIdentity),
    ("azure_cli", Kind::AzureCli),
    ("client_secret", Kind::ClientSecret),
];

pub(super) fn parse(ctx: &mut Ctx, entry: &Entry) -> Option<CredentialSpec> {
    let mut section = Section::from_entry(ctx, entry)?;
    let Some(type_entry) = section.take("type") else {
        let message = "a credential needs a type: \"workload_identity\", \"managed_identity\", \
                       \"azure_cli\" or \"client_secret\"";
        ctx.error(&section.key("type"), section.line, message);
        section.finish(ctx, KEYS, &[], "");
        return None;
    };
    let Some(kind) = ctx.choice(&type_entry, "credential type", KINDS) else {
        section.finish(ctx, KEYS, &[], "");
        return None;
    };
    let owner = |name: &str| format!("credential type \"{name}\"");
    match kind {
        Kind::WorkloadIdentity => {
            section.finish(ctx, &["type"], KEYS, &owner("workload_identity"));
            Some(CredentialSpec::WorkloadIdentity)
        }
        Kind::AzureCli => {
            section.finish(ctx, &["type"], KEYS, &owner("azure_cli"));
            Some(CredentialSpec::AzureCli)
        }
        Kind::ManagedIdentity => {
            let client_id = section.take("client_id").map(|entry| ctx.name(&entry));
            section.finish(
                ctx,
                &["type", "client_id"],
                KEYS,
                &owner("managed_identity"),
            );
            match client_id {
                Some(None) => None,
                Some(Some(client_id)) => Some(CredentialSpec::ManagedIdentity {
                    client_id: Some(client_id),
                }),
                None => Some(CredentialSpec::ManagedIdentity { client_id: None }),
            }
        }
        Kind::ClientSecret => {
            let required =
                |ctx: &mut Ctx, section: &mut Section, name: &str| match section.take(name) {
                    Some(entry) => ctx.name(&entry),
                    None => {
                        let message = "required by credential type \"client_secret\"";
                        ctx.error(&section.key(name), section.line, message);
                        None
                    }
                };
            let tenant_entry = section.take("tenant_id");
            let tenant_id = match tenant_entry {
                Some(entry) => ctx.name(&entry).and_then(|tenant_id| {
                    let check = check_tenant_id(&tenant_id);
                    ctx.checked(&entry, tenant_id, check)
                }),
                None => {
                    let message = "required by credential type \"client_secret\"";
                    ctx.error(&section.key("tenant_id"), section.line, message);
                    None
                }
            };
            let client_id = required(ctx, &mut section, "client_id");
            let client_secret = match section.secret_or_file(ctx, "client_secret") {
                Lookup::Present((secret, _)) => Some(secret),
                Lookup::Invalid => None,
                Lookup::Absent => {
                    let message = "required by credential type \"client_secret\" (or \
                                   client_secret_file)";
                    ctx.error(&section.key("client_secret"), section.line, message);
                    None
                }
            };
            section.finish(ctx, KEYS, &[], "");
            Some(CredentialSpec::ClientSecret {
                tenant_id: tenant_id?,
                client_id: client_id?,
                client_secret: client_secret?,
            })
        }
    }
}
