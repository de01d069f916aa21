// Type declarations for keygate's JS SDK (keygate.js). Apache-2.0.

/** The SDK's version. */
export declare const VERSION: string;

/**
 * What a connection gives the app: pass it straight to `new OpenAI(...)` in a browser.
 * `apiKey` is a keygate key for this app only (never the person's OpenAI key); `baseURL`
 * is keygate's OpenAI-compatible proxy (`VAULT/v1`).
 */
export interface OpenAIAccess {
  apiKey: string;
  baseURL: string;
  /** The `openai` package refuses to run in a browser without it; the key is made for it. */
  dangerouslyAllowBrowser: true;
  /**
   * The limits that apply to the key: what the person approved (they may have lowered what
   * you asked for), within the plan. null when keygate's answer doesn't say.
   */
  limits?: Limits | null;
  /** The plan the key is on, or null. */
  plan?: string | null;
  /** When the key stops working (RFC 3339, UTC), or null for never. */
  expiresAt?: string | null;
}

/** A budget period: calendar day, week (from Monday) or month, in UTC. */
export type BudgetPeriod = "day" | "week" | "month";

/** At most `usd` dollars and/or `tokens` tokens per `period`. */
export interface Budget {
  usd?: number | null;
  tokens?: number | null;
  period: BudgetPeriod;
}

/** Limits for one model, on top of the key's own. */
export interface ModelLimits {
  rpm?: number | null;
  tpm?: number | null;
  budget?: Budget | null;
}

/** A key's limits (keygate's wire shape); an absent or null field is no limit. */
export interface Limits {
  /** Requests per minute. */
  rpm?: number | null;
  /** Tokens per minute. */
  tpm?: number | null;
  /** Requests at the same time. */
  max_concurrency?: number | null;
  budget?: Budget | null;
  models?: Record<string, ModelLimits>;
}

/**
 * An endpoint scope. `inference`: models, chat, completions, responses (create),
 * embeddings, moderation, audio, images. `files`: upload, list, download, delete files.
 * `batches`: batch jobs. `fine_tuning`: fine-tuning jobs. `assistants`: assistants,
 * threads and vector stores. `stored`: read and delete stored chat completions and
 * responses. `/v1/organization/*` is never reachable.
 */
export type Scope = "inference" | "files" | "batches" | "fine_tuning" | "assistants" | "stored";

/** Every scope, in the order the consent screen lists them. */
export declare const SCOPES: readonly Scope[];

/** What the app asks for; the person may only narrow it on the consent screen. */
export interface ConnectRequest {
  /** The keygate server, e.g. "https://vault.example". */
  vault: string;
  /** Your app's name, shown to the person (labelled as declared by the app). Defaults to your origin's host. */
  appName?: string;
  /** Models the app needs, e.g. ["gpt-4o-mini"]. Omit for all models. */
  models?: string[];
  /**
   * The OpenAI endpoints the app needs, e.g. ["inference", "files"]. Omit for
   * ["inference"]; anything outside them is refused with 403 `endpoint_not_allowed`.
   */
  scopes?: Scope[];
  /**
   * A plan configured on the vault (`[plans.NAME]`): its limits are the most the key can get.
   * Omit for the vault's default plan, if it has one. An unknown name makes the approval fail.
   */
  plan?: string;
  /**
   * The limits you ask for, e.g. `{budget: {usd: 5, period: "month"}, rpm: 60}`. The person sees
   * them in plain words and may lower any of them; keygate keeps them within the plan.
   */
  limits?: Limits;
  /** How long the key should live, in seconds (e.g. 30 * 86400). The person may choose sooner. */
  expiresIn?: number;
}

export interface PopupOptions extends ConnectRequest {
  mode?: "popup";
  /** Give up after this many milliseconds (closes the popup, rejects with TimeoutError). Default 5 minutes. */
  timeoutMs?: number;
  /** Cancels the request: closes the popup and rejects with PopupClosedError. */
  signal?: AbortSignal;
}

export interface RedirectOptions extends ConnectRequest {
  mode: "redirect";
  /** Where keygate sends the browser back: https, or http://localhost / http://127.0.0.1; no fragment. */
  redirectUri: string;
}

export type RequestOptions = PopupOptions | RedirectOptions;

/**
 * Popup mode: opens `VAULT/connect` in a popup (call it directly in a click handler, before
 * any `await`) and resolves once the person approved with their passkey.
 *
 * @throws {PopupBlockedError} the browser blocked the popup
 * @throws {UserDeniedError} the person declined
 * @throws {PopupClosedError} the popup was closed first (or `signal` aborted)
 * @throws {TimeoutError} nothing happened within `timeoutMs`
 * @throws {VaultError} bad `vault` URL or an error reported by keygate
 */
export declare function requestOpenAIAPI(options: PopupOptions): Promise<OpenAIAccess>;
/**
 * Redirect mode: stores a PKCE verifier and state in sessionStorage and sends this page to
 * keygate. The promise never settles (the page navigates away); call completeRedirect()
 * on the `redirectUri` page.
 */
export declare function requestOpenAIAPI(options: RedirectOptions): Promise<never>;

export interface PkcePair {
  /** 43 characters of base64url randomness: keep it secret until the token exchange. */
  verifier: string;
  /** base64url(SHA-256(verifier)), sent as `code_challenge` with method S256. */
  challenge: string;
}

/** Makes a PKCE verifier and its S256 challenge. */
export declare function createPkcePair(): Promise<PkcePair>;

export interface ConnectURLOptions extends ConnectRequest {
  redirectUri: string;
  /** An unguessable value you check when the browser comes back. */
  state: string;
  /** The `challenge` of createPkcePair(). */
  codeChallenge: string;
}

/** `VAULT/connect?response_type=code&redirect_uri=…&state=…&code_challenge=…&code_challenge_method=S256&…` */
export declare function buildConnectURL(options: ConnectURLOptions): string;

export interface ExchangeOptions {
  vault: string;
  /** The `code` keygate added to your redirect URI. */
  code: string;
  /** The `verifier` of the PKCE pair whose challenge started this connection. */
  codeVerifier: string;
  /** When given, keygate checks it is the redirect URI the code was issued for. */
  redirectUri?: string;
  /** A fetch implementation (defaults to the global one). */
  fetch?: typeof fetch;
}

export interface TokenResult {
  apiKey: string;
  baseURL: string;
  /** The id of the connection (grant) in the person's keygate. */
  grantId: string;
  /** What applies, when keygate's answer carries the grant (otherwise null: ask keyInfo()). */
  limits: Limits | null;
  plan: string | null;
  expiresAt: string | null;
}

/**
 * `POST VAULT/api/connect/token`. A code works once and expires after 5 minutes.
 * @throws {VaultError} with keygate's `status` and `code` (e.g. `invalid_grant`)
 */
export declare function exchangeCode(options: ExchangeOptions): Promise<TokenResult>;

export interface CompleteRedirectOptions {
  /** The keygate server; when given it must match the one the flow started with. */
  vault?: string;
  /** The callback URL to read (defaults to the current address). */
  url?: string;
  /** Remove `code` and `state` from the address bar (default true). */
  cleanURL?: boolean;
  fetch?: typeof fetch;
}

export interface RedirectAccess extends OpenAIAccess {
  grantId: string;
}

/**
 * On the `redirectUri` page of requestOpenAIAPI({mode: "redirect"}): checks `state`,
 * exchanges `code` with the stored verifier, and resolves to options for `new OpenAI(...)`.
 * @throws {UserDeniedError} the person declined (`error=access_denied`)
 * @throws {VaultError} unknown state, missing code, or a refused exchange
 */
export declare function completeRedirect(options?: CompleteRedirectOptions): Promise<RedirectAccess>;

/** Base class of every error the SDK throws. */
export declare class KeygateError extends Error {
  constructor(message: string, options?: { code?: string; cause?: unknown });
  /** A stable, machine-readable name such as "popup_blocked" or "access_denied". */
  code: string;
}
export declare class PopupBlockedError extends KeygateError {
  constructor(message?: string);
  code: "popup_blocked";
}
export declare class UserDeniedError extends KeygateError {
  constructor(message?: string);
  code: "access_denied";
}
export declare class PopupClosedError extends KeygateError {
  constructor(message?: string);
  code: "popup_closed";
}
export declare class TimeoutError extends KeygateError {
  constructor(message?: string);
  code: "timeout";
}
export declare class VaultError extends KeygateError {
  constructor(message: string, options?: { code?: string; status?: number; cause?: unknown });
  /** HTTP status of keygate's answer, or 0 when there was none. */
  status: number;
}

export interface KeyInfoOptions {
  apiKey: string;
  /** keygate's OpenAI-compatible base URL (`VAULT/v1`), as requestOpenAIAPI() returned it. */
  baseURL: string;
  fetch?: typeof fetch;
}

/** `GET {baseURL}/key`: what the key may do and what is left of it. Never a secret. */
export interface KeyInfo {
  id: string;
  name: string;
  origin: string | null;
  models: string[];
  scopes?: Scope[];
  limits: Limits;
  /** RFC 3339 (UTC), or null for never. */
  expires_at: string | null;
  plan: string | null;
  usage: {
    /** The budget's period, else "month". */
    period: BudgetPeriod;
    period_start: string;
    resets_at: string;
    requests: number;
    tokens: number;
    usd: number;
  };
  /** What is left of the budget this period; null where there is no such budget. */
  remaining: { usd: number | null; tokens: number | null };
  rate_limit: {
    remaining_requests: number | null;
    remaining_tokens: number | null;
    reset_requests_s: number | null;
    reset_tokens_s: number | null;
  };
}

/**
 * What the key may do and what is left of it, e.g. to show "you have $3.20 left this month".
 * Not counted against the key's rate limit.
 * @throws {VaultError} with keygate's `status` and `code` (401 `revoked_api_key` once the key
 * was revoked, `invalid_api_key` once it was disabled, rotated out or removed,
 * `expired_api_key` once it expired)
 */
export declare function keyInfo(options: KeyInfoOptions): Promise<KeyInfo>;
