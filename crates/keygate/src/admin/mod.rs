//! `keygate admin`: the admin API of a running keygate, from a terminal or a script.
//! Tables for people, `--json` for scripts (the server's JSON as sent; a list is every
//! page's items in one array). The admin key comes from `--key-file` or
//! `KEYGATE_ADMIN_KEY`, never from the command line, and is never printed.

pub(crate) mod client;
mod table;

use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use anyhow::{Context, anyhow, bail};
use clap::{Args, Subcommand};
use reqwest::Method;
use secrecy::SecretString;
use serde_json::value::RawValue;
use serde_json::{Map, Value, json};

use client::{Client, Reply};

/// The variable the key is read from (the same one `keygate serve` reads its
/// bootstrap admin key from).
const KEY_VAR: &str = "KEYGATE_ADMIN_KEY";
/// A key file larger than this is not a key file.
const MAX_KEY_FILE_BYTES: u64 = 4096;

#[derive(Args)]
#[command(
    after_help = "The admin key is read from --key-file FILE when given, else from the \
KEYGATE_ADMIN_KEY variable; it is never taken on the command line and never printed.

Examples:
  export KEYGATE_ADMIN_KEY=...   # or: --key-file ~/.config/keygate/admin.key
  keygate admin users list
  keygate admin --url https://vault.example grants list --state active --json"
)]
pub struct AdminArgs {
    /// Where keygate answers (its public URL, or the address it listens on).
    #[arg(
        long,
        global = true,
        env = "KEYGATE_URL",
        default_value = "http://127.0.0.1:8080",
        value_name = "URL",
        help_heading = "Connection and output"
    )]
    url: String,
    /// Read the admin key from this file (first line) instead of KEYGATE_ADMIN_KEY.
    #[arg(
        long,
        global = true,
        value_name = "FILE",
        help_heading = "Connection and output"
    )]
    key_file: Option<PathBuf>,
    /// Print the server's JSON instead of a table (lists: every page in one array).
    #[arg(long, global = true, help_heading = "Connection and output")]
    json: bool,
    #[command(subcommand)]
    noun: Noun,
}

#[derive(Subcommand)]
enum Noun {
    /// People: list, show, create, delete.
    #[command(
        after_help = "Examples:\n  keygate admin users list\n  keygate admin users create \"Ada Lovelace\""
    )]
    Users {
        #[command(subcommand)]
        verb: UsersVerb,
    },
    /// Grants (what apps hold): list, show, create, change, rotate, disable, enable, revoke.
    #[command(
        after_help = "Examples:\n  keygate admin grants list --user USER_ID\n  keygate admin grants disable GRANT_ID"
    )]
    Grants {
        #[command(subcommand)]
        verb: GrantsVerb,
    },
    /// Admin keys (kga_…): list, create, revoke. Needs an admin key of scope `admin`.
    #[command(
        after_help = "Examples:\n  keygate admin keys list\n  keygate admin keys create --name ci --scope read"
    )]
    Keys {
        #[command(subcommand)]
        verb: KeysVerb,
    },
    /// Usage of every grant, totalled or grouped by user, grant, model and/or day.
    #[command(
        after_help = "Example:\n  keygate admin usage --from 2026-11-01 --to 2026-11-30 --group-by user,day"
    )]
    Usage {
        /// First UTC day, YYYY-MM-DD (default: 30 days ago).
        #[arg(long, value_name = "DAY")]
        from: Option<String>,
        /// Last UTC day, YYYY-MM-DD (default: today).
        #[arg(long, value_name = "DAY")]
        to: Option<String>,
        /// Group rows by these, in this order (repeat, or separate with commas).
        #[arg(
            long = "group-by",
            value_name = "KEY",
            value_delimiter = ',',
            value_parser = ["user", "grant", "model", "day"]
        )]
        group_by: Vec<String>,
    },
    /// The audit log, newest first.
    #[command(
        after_help = "Examples:\n  keygate admin audit --user USER_ID\n  keygate admin audit --action grant.revoked --from 2026-11-01 --limit 20"
    )]
    Audit {
        /// Only entries about this person (user id).
        #[arg(long, value_name = "USER_ID")]
        user: Option<String>,
        /// Only this action, e.g. grant.created.
        #[arg(long)]
        action: Option<String>,
        /// From this time on: RFC 3339 or YYYY-MM-DD.
        #[arg(long, value_name = "TIME")]
        from: Option<String>,
        /// Up to this time: RFC 3339 or YYYY-MM-DD.
        #[arg(long, value_name = "TIME")]
        to: Option<String>,
        #[command(flatten)]
        limit: Limit,
    },
    /// The operator's OpenAI key, used by plans with `use_operator_key`.
    #[command(
        name = "operator-key",
        after_help = "Examples:\n  printf %s \"$OPENAI_KEY\" | keygate admin operator-key set\n  keygate admin operator-key show"
    )]
    OperatorKey {
        #[command(subcommand)]
        verb: OperatorKeyVerb,
    },
}

/// `--limit`: stop after this many items instead of following every page.
#[derive(Args)]
struct Limit {
    /// Show at most this many items (default: all, page after page).
    #[arg(long, value_name = "N", value_parser = parse_limit)]
    limit: Option<usize>,
}

#[derive(Subcommand)]
enum UsersVerb {
    /// List people.
    #[command(after_help = "Example:\n  keygate admin users list --limit 50")]
    List {
        #[command(flatten)]
        limit: Limit,
    },
    /// Show one person.
    #[command(after_help = "Example:\n  keygate admin users show USER_ID")]
    Show {
        /// The person's id.
        id: String,
    },
    /// Create a person (they add a passkey and their OpenAI key later, or you give a grant).
    #[command(after_help = "Example:\n  keygate admin users create \"Ada Lovelace\"")]
    Create {
        /// Their name, as they will see it.
        name: String,
    },
    /// Delete a person and everything of theirs (key, passkeys, grants, sessions), at once.
    #[command(after_help = "Example:\n  keygate admin users delete USER_ID")]
    Delete {
        /// The person's id.
        id: String,
    },
}

#[derive(Subcommand)]
enum GrantsVerb {
    /// List grants: everyone's, or one person's; optionally by state or origin.
    #[command(
        after_help = "Examples:\n  keygate admin grants list --user USER_ID\n  keygate admin grants list --state disabled --origin https://notes.example"
    )]
    List {
        /// Only this person's grants (user id).
        #[arg(long, value_name = "USER_ID")]
        user: Option<String>,
        /// Only grants in this state.
        #[arg(long, value_parser = ["active", "disabled", "revoked"])]
        state: Option<String>,
        /// Only grants bound to this app origin, e.g. https://notes.example.
        #[arg(long)]
        origin: Option<String>,
        #[command(flatten)]
        limit: Limit,
    },
    /// Show one grant (revoked ones too).
    #[command(after_help = "Example:\n  keygate admin grants show GRANT_ID")]
    Show {
        /// The grant's id.
        id: String,
    },
    /// Create a grant for a person; prints its API key, which is shown only this once.
    #[command(
        after_help = "Example:\n  keygate admin grants create --user USER_ID --name \"Notes app\" --model gpt-4o-mini --plan free"
    )]
    Create {
        /// The person the grant spends for (user id).
        #[arg(long, value_name = "USER_ID")]
        user: String,
        /// The grant's name, as the person sees it.
        #[arg(long)]
        name: String,
        /// Allow this model (repeat for more; none given: every model).
        #[arg(long = "model", value_name = "MODEL")]
        models: Vec<String>,
        /// Allow this endpoint scope (repeat for more; default: inference).
        #[arg(long = "scope", value_name = "SCOPE")]
        scopes: Vec<String>,
        /// Put the grant on this configured plan.
        #[arg(long)]
        plan: Option<String>,
        /// Limits as JSON, e.g. '{"rpm":60,"budget":{"usd":5,"period":"month"}}'.
        #[arg(long, value_name = "JSON", value_parser = parse_json_object)]
        limits: Option<Value>,
        /// Expiry, an RFC 3339 date-time such as 2026-12-31T00:00:00Z.
        #[arg(long, value_name = "TIME")]
        expires_at: Option<String>,
    },
    /// Change a grant: only what is given changes.
    #[command(
        after_help = "Examples:\n  keygate admin grants patch GRANT_ID --model gpt-4o-mini --model gpt-4o\n  keygate admin grants patch GRANT_ID --limits '{\"rpm\":10}' --no-expiry"
    )]
    Patch {
        /// The grant's id.
        id: String,
        /// New name.
        #[arg(long)]
        name: Option<String>,
        /// Allow only these models (repeat for more).
        #[arg(long = "model", value_name = "MODEL", conflicts_with = "all_models")]
        models: Vec<String>,
        /// Allow every model.
        #[arg(long)]
        all_models: bool,
        /// Allow only these endpoint scopes (repeat for more).
        #[arg(long = "scope", value_name = "SCOPE")]
        scopes: Vec<String>,
        /// Move the grant to this plan (it gets the plan's limits unless --limits is given).
        #[arg(long, conflicts_with = "no_plan")]
        plan: Option<String>,
        /// Take the grant off its plan.
        #[arg(long)]
        no_plan: bool,
        /// New limits as JSON (replacing the old ones).
        #[arg(long, value_name = "JSON", value_parser = parse_json_object, conflicts_with = "no_limits")]
        limits: Option<Value>,
        /// Remove every limit.
        #[arg(long)]
        no_limits: bool,
        /// New expiry, an RFC 3339 date-time.
        #[arg(long, value_name = "TIME", conflicts_with = "no_expiry")]
        expires_at: Option<String>,
        /// Never expire.
        #[arg(long)]
        no_expiry: bool,
    },
    /// Give a grant a new API key (printed once); the old one works for --grace seconds.
    #[command(after_help = "Example:\n  keygate admin grants rotate GRANT_ID --grace 3600")]
    Rotate {
        /// The grant's id.
        id: String,
        /// Seconds the old key keeps working (default: the server's).
        #[arg(long, value_name = "SECONDS")]
        grace: Option<u64>,
    },
    /// Refuse a grant's key until it is enabled again.
    #[command(after_help = "Example:\n  keygate admin grants disable GRANT_ID")]
    Disable {
        /// The grant's id.
        id: String,
    },
    /// Let a disabled grant's key work again.
    #[command(after_help = "Example:\n  keygate admin grants enable GRANT_ID")]
    Enable {
        /// The grant's id.
        id: String,
    },
    /// Revoke a grant for good: its key is refused from the next request on.
    #[command(
        after_help = "Examples:\n  keygate admin grants revoke GRANT_ID\n  keygate admin grants revoke GRANT_ID --remove   # also drop it from the lists"
    )]
    Revoke {
        /// The grant's id.
        id: String,
        /// Also remove the revoked grant from the lists (its usage stays in reports).
        #[arg(long)]
        remove: bool,
    },
}

#[derive(Subcommand)]
enum KeysVerb {
    /// List admin keys (never the keys themselves).
    #[command(after_help = "Example:\n  keygate admin keys list")]
    List {
        #[command(flatten)]
        limit: Limit,
    },
    /// Create an admin key; prints it, shown only this once.
    #[command(
        after_help = "Example:\n  keygate admin keys create --name grafana --scope read --expires-at 2027-01-01T00:00:00Z"
    )]
    Create {
        /// What the key is for.
        #[arg(long)]
        name: String,
        /// read: GET only; write: also change people and grants; admin: also admin keys.
        #[arg(long, value_parser = ["read", "write", "admin"])]
        scope: String,
        /// Expiry, an RFC 3339 date-time (default: never).
        #[arg(long, value_name = "TIME")]
        expires_at: Option<String>,
    },
    /// Revoke an admin key: refused from the next request on.
    #[command(after_help = "Example:\n  keygate admin keys revoke KEY_ID")]
    Revoke {
        /// The admin key's id (from `keys list`).
        id: String,
    },
}

#[derive(Subcommand)]
enum OperatorKeyVerb {
    /// Store the operator's OpenAI key, read from standard input (never an argument).
    #[command(after_help = "Example:\n  keygate admin operator-key set < openai.key")]
    Set {
        /// Caught only to refuse it without repeating it (clap would print a word it
        /// does not expect): a key given here is in the shell history already.
        #[arg(hide = true, num_args = 0.., trailing_var_arg = true)]
        on_command_line: Vec<String>,
    },
    /// Whether an operator key is set, and when (never the key).
    #[command(after_help = "Example:\n  keygate admin operator-key show")]
    Show,
    /// Delete the operator key.
    #[command(after_help = "Example:\n  keygate admin operator-key delete")]
    Delete,
}

/// Runs one `keygate admin` command. Errors are one line each (the binary prints them
/// after `keygate: `).
pub fn run(args: AdminArgs) -> anyhow::Result<()> {
    let key = admin_key(args.key_file.as_deref())?;
    let client = Client::new(&args.url, key)?;
    let out = Out { json: args.json };
    match args.noun {
        Noun::Users { verb } => users(&client, &out, verb),
        Noun::Grants { verb } => grants(&client, &out, verb),
        Noun::Keys { verb } => keys(&client, &out, verb),
        Noun::Usage { from, to, group_by } => {
            let mut q = Vec::new();
            push_opt(&mut q, "from", from);
            push_opt(&mut q, "to", to);
            q.extend(group_by.into_iter().map(|g| ("group_by", g)));
            let reply = client.send(Method::GET, "/admin/usage", &q, None)?;
            out.one(&reply, table::usage)
        }
        Noun::Audit {
            user,
            action,
            from,
            to,
            limit,
        } => {
            let mut q = Vec::new();
            push_opt(
                &mut q,
                "user",
                user.map(|u| id(&u, "a user id")).transpose()?,
            );
            push_opt(&mut q, "action", action);
            push_opt(&mut q, "from", from);
            push_opt(&mut q, "to", to);
            let items = client.list("/admin/audit", &q, limit.get())?;
            out.list(&items, table::audit)
        }
        Noun::OperatorKey { verb } => operator_key(&client, &out, verb),
    }
}

fn users(client: &Client, out: &Out, verb: UsersVerb) -> anyhow::Result<()> {
    match verb {
        UsersVerb::List { limit } => {
            let items = client.list("/admin/users", &[], limit.get())?;
            out.list(&items, table::users)
        }
        UsersVerb::Show { id: u } => {
            let path = format!("/admin/users/{}", id(&u, "a user id")?);
            out.one(&client.send(Method::GET, &path, &[], None)?, table::user)
        }
        UsersVerb::Create { name } => {
            let reply = client.send(
                Method::POST,
                "/admin/users",
                &[],
                Some(&json!({"name": name})),
            )?;
            out.one(&reply, table::user)
        }
        UsersVerb::Delete { id: u } => {
            let u = id(&u, "a user id")?;
            let reply = client.send(Method::DELETE, &format!("/admin/users/{u}"), &[], None)?;
            out.done(
                &reply,
                &format!("Deleted user {u} and everything of theirs."),
            )
        }
    }
}

fn grants(client: &Client, out: &Out, verb: GrantsVerb) -> anyhow::Result<()> {
    match verb {
        GrantsVerb::List {
            user,
            state,
            origin,
            limit,
        } => {
            let user = user.map(|u| id(&u, "a user id")).transpose()?;
            // One person's grants alone: their own list, which says when there is no
            // such person (the filtered list would just be empty).
            let items = match (&user, &state, &origin) {
                (Some(u), None, None) => {
                    client.list(&format!("/admin/users/{u}/grants"), &[], limit.get())?
                }
                _ => {
                    let mut q = Vec::new();
                    push_opt(&mut q, "user", user);
                    push_opt(&mut q, "state", state);
                    push_opt(&mut q, "origin", origin);
                    client.list("/admin/grants", &q, limit.get())?
                }
            };
            out.list(&items, table::grants)
        }
        GrantsVerb::Show { id: g } => {
            let path = grant_path(&g, "")?;
            out.one(&client.send(Method::GET, &path, &[], None)?, table::grant)
        }
        GrantsVerb::Create {
            user,
            name,
            models,
            scopes,
            plan,
            limits,
            expires_at,
        } => {
            let mut body = Map::new();
            body.insert("name".into(), name.into());
            if !models.is_empty() {
                body.insert("models".into(), models.into());
            }
            if !scopes.is_empty() {
                body.insert("scopes".into(), scopes.into());
            }
            insert_opt(&mut body, "plan", plan.map(Value::from));
            insert_opt(&mut body, "limits", limits);
            insert_opt(&mut body, "expires_at", expires_at.map(Value::from));
            let path = format!("/admin/users/{}/grants", id(&user, "a user id")?);
            let reply = client.send(Method::POST, &path, &[], Some(&Value::Object(body)))?;
            out.one(&reply, table::issued)
        }
        GrantsVerb::Patch {
            id: g,
            name,
            models,
            all_models,
            scopes,
            plan,
            no_plan,
            limits,
            no_limits,
            expires_at,
            no_expiry,
        } => {
            let mut body = Map::new();
            insert_opt(&mut body, "name", name.map(Value::from));
            if all_models {
                body.insert("models".into(), json!([]));
            } else if !models.is_empty() {
                body.insert("models".into(), models.into());
            }
            if !scopes.is_empty() {
                body.insert("scopes".into(), scopes.into());
            }
            insert_cleared(&mut body, "plan", plan.map(Value::from), no_plan);
            insert_cleared(&mut body, "limits", limits, no_limits);
            insert_cleared(
                &mut body,
                "expires_at",
                expires_at.map(Value::from),
                no_expiry,
            );
            if body.is_empty() {
                bail!(
                    "nothing to change: give at least one of --name, --model, --all-models, --scope, --plan, --no-plan, --limits, --no-limits, --expires-at, --no-expiry"
                );
            }
            let path = grant_path(&g, "")?;
            let reply = client.send(Method::PATCH, &path, &[], Some(&Value::Object(body)))?;
            out.one(&reply, table::grant)
        }
        GrantsVerb::Rotate { id: g, grace } => {
            let body = match grace {
                Some(s) => json!({"grace_seconds": s}),
                None => json!({}),
            };
            let reply = client.send(Method::POST, &grant_path(&g, "/rotate")?, &[], Some(&body))?;
            out.one(&reply, table::issued)
        }
        GrantsVerb::Disable { id: g } => {
            let reply = client.send(Method::POST, &grant_path(&g, "/disable")?, &[], None)?;
            out.one(&reply, table::grant)
        }
        GrantsVerb::Enable { id: g } => {
            let reply = client.send(Method::POST, &grant_path(&g, "/enable")?, &[], None)?;
            out.one(&reply, table::grant)
        }
        GrantsVerb::Revoke { id: g, remove } => revoke_grant(client, out, &g, remove),
    }
}

/// `DELETE /admin/grants/{id}` revokes a live grant and removes a revoked one. Running
/// `revoke` twice must not remove the grant by surprise, so the state is read first:
/// an already revoked grant is removed only when `--remove` asks for it.
fn revoke_grant(client: &Client, out: &Out, g: &str, remove: bool) -> anyhow::Result<()> {
    let path = grant_path(g, "")?;
    let state = client.send(Method::GET, &path, &[], None)?.json()?["state"].clone();
    let revoked = state.as_str() == Some("revoked");
    if revoked && !remove {
        bail!("grant {g} is already revoked (add --remove to also remove it from the lists)");
    }
    if !revoked {
        let reply = client.send(Method::DELETE, &path, &[], None)?;
        if !remove {
            return out.done(
                &reply,
                &format!("Revoked grant {g}: its key is refused from now on."),
            );
        }
    }
    let reply = client.send(Method::DELETE, &path, &[], None)?;
    let said = if revoked {
        format!("Removed revoked grant {g} from the lists.")
    } else {
        format!("Revoked grant {g} and removed it from the lists.")
    };
    out.done(&reply, &said)
}

fn keys(client: &Client, out: &Out, verb: KeysVerb) -> anyhow::Result<()> {
    match verb {
        KeysVerb::List { limit } => {
            let items = client.list("/admin/keys", &[], limit.get())?;
            out.list(&items, table::keys)
        }
        KeysVerb::Create {
            name,
            scope,
            expires_at,
        } => {
            let mut body = Map::new();
            body.insert("name".into(), name.into());
            body.insert("scope".into(), scope.into());
            insert_opt(&mut body, "expires_at", expires_at.map(Value::from));
            let reply =
                client.send(Method::POST, "/admin/keys", &[], Some(&Value::Object(body)))?;
            out.one(&reply, table::new_key)
        }
        KeysVerb::Revoke { id: k } => {
            let k = id(&k, "an admin key id")?;
            let reply = client.send(Method::DELETE, &format!("/admin/keys/{k}"), &[], None)?;
            out.done(
                &reply,
                &format!("Revoked admin key {k}: refused from now on."),
            )
        }
    }
}

fn operator_key(client: &Client, out: &Out, verb: OperatorKeyVerb) -> anyhow::Result<()> {
    const PATH: &str = "/admin/operator-key";
    match verb {
        OperatorKeyVerb::Set { on_command_line } => {
            if !on_command_line.is_empty() {
                bail!(
                    "the key is read from standard input, never from the command line (where \
                     the shell history and the process list keep it): \
                     `keygate admin operator-key set < openai.key`"
                );
            }
            let key = crate::secret_input::read_line(
                "The operator's OpenAI key (not shown): ",
                "keygate admin operator-key set < openai.key",
            )?;
            let body = json!({"api_key": secrecy::ExposeSecret::expose_secret(&key)});
            let reply = client.send(Method::PUT, PATH, &[], Some(&body))?;
            out.done(&reply, "Operator key stored (sealed with the master key).")
        }
        OperatorKeyVerb::Show => out.one(
            &client.send(Method::GET, PATH, &[], None)?,
            table::operator_key,
        ),
        OperatorKeyVerb::Delete => {
            let reply = client.send(Method::DELETE, PATH, &[], None)?;
            out.done(&reply, "Operator key deleted.")
        }
    }
}

/// Where answers go: a table (or a sentence) for people, the server's JSON for scripts.
struct Out {
    json: bool,
}

impl Out {
    /// One object: its JSON as sent, or `render` of it.
    fn one(&self, reply: &Reply, render: fn(&Value) -> String) -> anyhow::Result<()> {
        if self.json {
            let text = String::from_utf8_lossy(&reply.body);
            return say(text.trim_end());
        }
        say(&render(&reply.json()?))
    }

    /// A list: every item as sent, in one JSON array, or `render` of them.
    fn list(&self, items: &[Box<RawValue>], render: fn(&[Value]) -> String) -> anyhow::Result<()> {
        if self.json {
            let raw: Vec<&str> = items.iter().map(|i| i.get()).collect();
            return say(&format!("[{}]", raw.join(",")));
        }
        let values = items
            .iter()
            .map(|i| serde_json::from_str(i.get()))
            .collect::<Result<Vec<Value>, _>>()
            .map_err(|_| anyhow!("the answer was not JSON"))?;
        say(&render(&values))
    }

    /// An answer without a body (204): a sentence for people; nothing for scripts,
    /// whose exit status says it worked.
    fn done(&self, reply: &Reply, sentence: &str) -> anyhow::Result<()> {
        if self.json {
            if !reply.body.is_empty() {
                return say(String::from_utf8_lossy(&reply.body).trim_end());
            }
            return Ok(());
        }
        say(sentence)
    }
}

/// A line on stdout; a closed pipe (`| head`) is not an error.
fn say(text: &str) -> anyhow::Result<()> {
    let mut stdout = std::io::stdout().lock();
    match writeln!(stdout, "{text}").and_then(|()| stdout.flush()) {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        other => other.context("could not write to standard output"),
    }
}

impl Limit {
    fn get(&self) -> Option<usize> {
        self.limit
    }
}

/// `--limit`: a whole number of at least 1.
fn parse_limit(s: &str) -> Result<usize, String> {
    match s.parse::<usize>() {
        Ok(n) if n >= 1 => Ok(n),
        _ => Err("must be a whole number of at least 1".into()),
    }
}

/// The admin key: `--key-file` when given (an explicit choice wins over the
/// environment), else `KEYGATE_ADMIN_KEY`. Errors name where it was looked for,
/// never what was found.
pub(crate) fn admin_key(file: Option<&Path>) -> anyhow::Result<SecretString> {
    let text = match file {
        Some(path) => read_key_file(path)?,
        None => match std::env::var(KEY_VAR) {
            Ok(v) => v,
            Err(std::env::VarError::NotUnicode(_)) => bail!("{KEY_VAR} is not valid UTF-8"),
            Err(std::env::VarError::NotPresent) => bail!(
                "no admin key: set {KEY_VAR} or pass --key-file FILE (see `keygate admin --help`)"
            ),
        },
    };
    let key = text.lines().next().unwrap_or("").trim();
    if key.is_empty() {
        match file {
            Some(path) => bail!("key file {} is empty", path.display()),
            None => bail!("{KEY_VAR} is empty"),
        }
    }
    Ok(SecretString::from(key.to_owned()))
}

fn read_key_file(path: &Path) -> anyhow::Result<String> {
    let shown = path.display();
    let file =
        std::fs::File::open(path).map_err(|e| anyhow!("cannot read key file {shown}: {e}"))?;
    warn_if_others_can_read(&file, path);
    let mut text = String::new();
    file.take(MAX_KEY_FILE_BYTES + 1)
        .read_to_string(&mut text)
        .map_err(|e| anyhow!("cannot read key file {shown}: {e}"))?;
    if text.len() as u64 > MAX_KEY_FILE_BYTES {
        bail!("key file {shown} is larger than {MAX_KEY_FILE_BYTES} bytes: not a key file");
    }
    Ok(text)
}

/// A key file that group or others may read is used (a container's mounted secret often
/// is 0644), but said once on stderr, as the server says of its master key file: on a
/// shared machine anyone may read the key there.
fn warn_if_others_can_read(file: &std::fs::File, path: &Path) {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        if let Ok(meta) = file.metadata()
            && meta.is_file()
            && meta.permissions().mode() & 0o077 != 0
        {
            let _ = writeln!(
                std::io::stderr(),
                "keygate: warning: key file {} can be read by group or others; chmod 600 it",
                path.display()
            );
        }
    }
    #[cfg(not(unix))]
    let _ = (file, path);
}

/// An id as a path segment: keygate's ids are short runs of letters, digits, `_` and
/// `-`; anything else (a `/`, `..`, a space) is refused here rather than sent.
fn id(raw: &str, what: &str) -> anyhow::Result<String> {
    let ok = !raw.is_empty()
        && raw.len() <= 128
        && raw
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if ok {
        Ok(raw.to_owned())
    } else {
        Err(anyhow!("{raw:?} is not {what}"))
    }
}

fn grant_path(g: &str, rest: &str) -> anyhow::Result<String> {
    Ok(format!("/admin/grants/{}{rest}", id(g, "a grant id")?))
}

fn push_opt(q: &mut Vec<(&'static str, String)>, k: &'static str, v: Option<impl Into<String>>) {
    if let Some(v) = v {
        q.push((k, v.into()));
    }
}

fn insert_opt(body: &mut Map<String, Value>, k: &str, v: Option<Value>) {
    if let Some(v) = v {
        body.insert(k.into(), v);
    }
}

/// A field that a `--no-…` flag sets to `null` (clears).
fn insert_cleared(body: &mut Map<String, Value>, k: &str, v: Option<Value>, clear: bool) {
    if clear {
        body.insert(k.into(), Value::Null);
    } else {
        insert_opt(body, k, v);
    }
}

/// `--limits`: a JSON object (the server checks what is in it).
fn parse_json_object(s: &str) -> Result<Value, String> {
    match serde_json::from_str::<Value>(s) {
        Ok(v @ Value::Object(_)) => Ok(v),
        Ok(_) => Err("must be a JSON object, e.g. '{\"rpm\":60}'".into()),
        Err(e) => Err(format!("not JSON ({e})")),
    }
}

#[cfg(test)]
mod tests {
    use clap::{Args, Command};

    use super::*;

    /// Every `keygate admin` command, down to each verb, ends its help with an example.
    #[test]
    fn every_command_has_an_example() {
        fn walk(cmd: &Command, path: &str, seen: &mut usize) {
            let path = format!("{path} {}", cmd.get_name());
            let after = cmd
                .get_after_help()
                .map(ToString::to_string)
                .unwrap_or_default();
            assert!(after.contains("Example"), "{path} has no example");
            *seen += 1;
            for sub in cmd.get_subcommands().filter(|s| s.get_name() != "help") {
                walk(sub, &path, seen);
            }
        }
        let admin = AdminArgs::augment_args(Command::new("admin"));
        let mut seen = 0;
        walk(&admin, "keygate", &mut seen);
        // admin, 6 nouns, 4 + 8 + 3 + 3 verbs.
        assert_eq!(seen, 25);
    }

    #[test]
    fn ids_are_path_segments_or_refused() {
        assert_eq!(
            id("abcdefghijklmnop", "a user id").unwrap(),
            "abcdefghijklmnop"
        );
        for bad in ["", "../keys", "a/b", "a b", "a?b", "a%2fb", "ü"] {
            assert!(id(bad, "a user id").is_err(), "{bad}");
        }
    }

    #[test]
    fn limits_must_be_a_json_object() {
        assert!(parse_json_object("{\"rpm\":1}").is_ok());
        assert!(parse_json_object("[1]").is_err());
        assert!(parse_json_object("{").is_err());
        assert!(parse_limit("0").is_err() && parse_limit("x").is_err());
        assert_eq!(parse_limit("7"), Ok(7));
    }
}
