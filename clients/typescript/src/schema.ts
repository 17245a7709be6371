/**
 * GENERATED FILE: do not edit by hand.
 *
 * The types of the agents-api HTTP API, made by openapi-typescript from the OpenAPI
 * document that `agents-api openapi` prints. Regenerate from the repository root with
 *
 *     ./scripts/typescript-client.sh
 *
 * (`./scripts/typescript-client.sh --check`, part of ./scripts/test.sh, fails when this
 * file is stale).
 */

export interface paths {
    "/health/live": {
        parameters: {
            query?: never;
            header?: never;
            path?: never;
            cookie?: never;
        };
        /** 200 while the process runs. */
        get: {
            parameters: {
                query?: never;
                header?: never;
                path?: never;
                cookie?: never;
            };
            requestBody?: never;
            responses: {
                200: {
                    headers: {
                        [name: string]: unknown;
                    };
                    content: {
                        "application/json": components["schemas"]["Live"];
                    };
                };
                /** @description An error, as RFC 9457 problem+json. */
                default: {
                    headers: {
                        [name: string]: unknown;
                    };
                    content: {
                        "application/problem+json": components["schemas"]["Problem"];
                    };
                };
            };
        };
        put?: never;
        post?: never;
        delete?: never;
        options?: never;
        head?: never;
        patch?: never;
        trace?: never;
    };
    "/health/ready": {
        parameters: {
            query?: never;
            header?: never;
            path?: never;
            cookie?: never;
        };
        /**
         * 200 when PostgreSQL and Redis both answer within 1 s, the job workers (if any) run,
         *     and the process is not draining.
         */
        get: {
            parameters: {
                query?: never;
                header?: never;
                path?: never;
                cookie?: never;
            };
            requestBody?: never;
            responses: {
                200: {
                    headers: {
                        [name: string]: unknown;
                    };
                    content: {
                        "application/json": components["schemas"]["Readiness"];
                    };
                };
                503: {
                    headers: {
                        [name: string]: unknown;
                    };
                    content: {
                        "application/json": components["schemas"]["Readiness"];
                    };
                };
                /** @description An error, as RFC 9457 problem+json. */
                default: {
                    headers: {
                        [name: string]: unknown;
                    };
                    content: {
                        "application/problem+json": components["schemas"]["Problem"];
                    };
                };
            };
        };
        put?: never;
        post?: never;
        delete?: never;
        options?: never;
        head?: never;
        patch?: never;
        trace?: never;
    };
    "/v1/kommo/oauth/callback": {
        parameters: {
            query?: never;
            header?: never;
            path?: never;
            cookie?: never;
        };
        /**
         * Kommo sends the browser here; it is sent on to `FRONTEND_URL` with
         *     `status=connected&connection_id=…` or `status=error&reason=…`.
         */
        get: {
            parameters: {
                query?: {
                    code?: string;
                    state?: string;
                    referer?: string;
                    error?: string;
                };
                header?: never;
                path?: never;
                cookie?: never;
            };
            requestBody?: never;
            responses: {
                /** @description Without FRONTEND_URL: `{"status": "connected", "connection_id": …}` */
                200: {
                    headers: {
                        [name: string]: unknown;
                    };
                    content: {
                        "application/json": unknown;
                    };
                };
                /** @description to FRONTEND_URL */
                302: {
                    headers: {
                        [name: string]: unknown;
                    };
                    content?: never;
                };
                /** @description An error, as RFC 9457 problem+json. */
                default: {
                    headers: {
                        [name: string]: unknown;
                    };
                    content: {
                        "application/problem+json": components["schemas"]["Problem"];
                    };
                };
            };
        };
        put?: never;
        /**
         * Completes OAuth for the user who started it (the frontend's server calls this with
         *     that user's token); a state of another user is refused like an unknown one.
         */
        post: {
            parameters: {
                query?: never;
                header?: never;
                path?: never;
                cookie?: never;
            };
            requestBody: {
                content: {
                    "application/json": components["schemas"]["OauthCallback"];
                };
            };
            responses: {
                200: {
                    headers: {
                        [name: string]: unknown;
                    };
                    content: {
                        "application/json": components["schemas"]["OauthConnected"];
                    };
                };
                /** @description No valid bearer token. */
                401: {
                    headers: {
                        [name: string]: unknown;
                    };
                    content: {
                        "application/problem+json": components["schemas"]["Problem"];
                    };
                };
                /** @description No such resource, or an org the caller is not a member of. */
                404: {
                    headers: {
                        [name: string]: unknown;
                    };
                    content: {
                        "application/problem+json": components["schemas"]["Problem"];
                    };
                };
                /** @description Rate limited; see Retry-After and RateLimit-*. */
                429: {
                    headers: {
                        [name: string]: unknown;
                    };
                    content: {
                        "application/problem+json": components["schemas"]["Problem"];
                    };
                };
                /** @description An error, as RFC 9457 problem+json. */
                default: {
                    headers: {
                        [name: string]: unknown;
                    };
                    content: {
                        "application/problem+json": components["schemas"]["Problem"];
                    };
                };
            };
        };
        delete?: never;
        options?: never;
        head?: never;
        patch?: never;
        trace?: never;
    };
    "/v1/kommo/webhooks/{connection_id}/{token}": {
        parameters: {
            query?: never;
            header?: never;
            path?: never;
            cookie?: never;
        };
        get?: never;
        put?: never;
        /** Receives a Kommo webhook. An unknown connection and a wrong token get the same 404. */
        post: {
            parameters: {
                query?: never;
                header?: never;
                path: {
                    connection_id: string;
                    /** @description the secret from the webhook URL */
                    token: string;
                };
                cookie?: never;
            };
            /** @description The event as Kommo sends it: form fields such as `leads[add][0][id]`, or JSON. */
            requestBody: {
                content: {
                    "application/json": {
                        [key: string]: unknown;
                    };
                    "application/x-www-form-urlencoded": {
                        [key: string]: string;
                    };
                };
            };
            responses: {
                200: {
                    headers: {
                        [name: string]: unknown;
                    };
                    content: {
                        "application/json": components["schemas"]["WebhookAccepted"];
                    };
                };
                /** @description An error, as RFC 9457 problem+json. */
                default: {
                    headers: {
                        [name: string]: unknown;
                    };
                    content: {
                        "application/problem+json": components["schemas"]["Problem"];
                    };
                };
            };
        };
        delete?: never;
        options?: never;
        head?: never;
        patch?: never;
        trace?: never;
    };
    "/v1/me": {
        parameters: {
            query?: never;
            header?: never;
            path?: never;
            cookie?: never;
        };
        /** The caller and the orgs they belong to, with their role in each. */
        get: {
            parameters: {
                query?: never;
                header?: never;
                path?: never;
                cookie?: never;
            };
            requestBody?: never;
            responses: {
                200: {
                    headers: {
                        [name: string]: unknown;
                    };
                    content: {
                        "application/json": components["schemas"]["Me"];
                    };
                };
                /** @description No valid bearer token. */
                401: {
                    headers: {
                        [name: string]: unknown;
                    };
                    content: {
                        "application/problem+json": components["schemas"]["Problem"];
                    };
                };
                /** @description No such resource, or an org the caller is not a member of. */
                404: {
                    headers: {
                        [name: string]: unknown;
                    };
                    content: {
                        "application/problem+json": components["schemas"]["Problem"];
                    };
                };
                /** @description Rate limited; see Retry-After and RateLimit-*. */
                429: {
                    headers: {
                        [name: string]: unknown;
                    };
                    content: {
                        "application/problem+json": components["schemas"]["Problem"];
                    };
                };
                /** @description An error, as RFC 9457 problem+json. */
                default: {
                    headers: {
                        [name: string]: unknown;
                    };
                    content: {
                        "application/problem+json": components["schemas"]["Problem"];
                    };
                };
            };
        };
        put?: never;
        post?: never;
        delete?: never;
        options?: never;
        head?: never;
        patch?: never;
        trace?: never;
    };
    "/v1/orgs": {
        parameters: {
            query?: never;
            header?: never;
            path?: never;
            cookie?: never;
        };
        get?: never;
        put?: never;
        /** Creates an org; the caller becomes its owner. */
        post: {
            parameters: {
                query?: never;
                header?: never;
                path?: never;
                cookie?: never;
            };
            requestBody: {
                content: {
                    "application/json": components["schemas"]["CreateOrg"];
                };
            };
            responses: {
                201: {
                    headers: {
                        [name: string]: unknown;
                    };
                    content: {
                        "application/json": components["schemas"]["OrgWithRole"];
                    };
                };
                /** @description No valid bearer token. */
                401: {
                    headers: {
                        [name: string]: unknown;
                    };
                    content: {
                        "application/problem+json": components["schemas"]["Problem"];
                    };
                };
                /** @description No such resource, or an org the caller is not a member of. */
                404: {
                    headers: {
                        [name: string]: unknown;
                    };
                    content: {
                        "application/problem+json": components["schemas"]["Problem"];
                    };
                };
                /** @description Rate limited; see Retry-After and RateLimit-*. */
                429: {
                    headers: {
                        [name: string]: unknown;
                    };
                    content: {
                        "application/problem+json": components["schemas"]["Problem"];
                    };
                };
                /** @description An error, as RFC 9457 problem+json. */
                default: {
                    headers: {
                        [name: string]: unknown;
                    };
                    content: {
                        "application/problem+json": components["schemas"]["Problem"];
                    };
                };
            };
        };
        delete?: never;
        options?: never;
        head?: never;
        patch?: never;
        trace?: never;
    };
    "/v1/orgs/{org_id}": {
        parameters: {
            query?: never;
            header?: never;
            path?: never;
            cookie?: never;
        };
        /** The org and the caller's role in it. */
        get: {
            parameters: {
                query?: never;
                header?: never;
                path: {
                    org_id: string;
                };
                cookie?: never;
            };
            requestBody?: never;
            responses: {
                200: {
                    headers: {
                        [name: string]: unknown;
                    };
                    content: {
                        "application/json": components["schemas"]["OrgWithRole"];
                    };
                };
                /** @description No valid bearer token. */
                401: {
                    headers: {
                        [name: string]: unknown;
                    };
                    content: {
                        "application/problem+json": components["schemas"]["Problem"];
                    };
                };
                /** @description No such resource, or an org the caller is not a member of. */
                404: {
                    headers: {
                        [name: string]: unknown;
                    };
                    content: {
                        "application/problem+json": components["schemas"]["Problem"];
                    };
                };
                /** @description Rate limited; see Retry-After and RateLimit-*. */
                429: {
                    headers: {
                        [name: string]: unknown;
                    };
                    content: {
                        "application/problem+json": components["schemas"]["Problem"];
                    };
                };
                /** @description An error, as RFC 9457 problem+json. */
                default: {
                    headers: {
                        [name: string]: unknown;
                    };
                    content: {
                        "application/problem+json": components["schemas"]["Problem"];
                    };
                };
            };
        };
        put?: never;
        post?: never;
        delete?: never;
        options?: never;
        head?: never;
        patch?: never;
        trace?: never;
    };
    "/v1/orgs/{org_id}/agents": {
        parameters: {
            query?: never;
            header?: never;
            path?: never;
            cookie?: never;
        };
        /** The org's agents, newest first, with the total matching the filters. */
        get: {
            parameters: {
                query?: {
                    status?: components["schemas"]["AgentStatus"];
                    /** @description Case-insensitive part of the name (at most 100 characters). */
                    search?: string;
                    /** @description 1..=100, default 25. */
                    limit?: number;
                    cursor?: string;
                };
                header?: never;
                path: {
                    org_id: string;
                };
                cookie?: never;
            };
            requestBody?: never;
            responses: {
                200: {
                    headers: {
                        [name: string]: unknown;
                    };
                    content: {
                        "application/json": components["schemas"]["AgentList"];
                    };
                };
                /** @description No valid bearer token. */
                401: {
                    headers: {
                        [name: string]: unknown;
                    };
                    content: {
                        "application/problem+json": components["schemas"]["Problem"];
                    };
                };
                /** @description No such resource, or an org the caller is not a member of. */
                404: {
                    headers: {
                        [name: string]: unknown;
                    };
                    content: {
                        "application/problem+json": components["schemas"]["Problem"];
                    };
                };
                /** @description Rate limited; see Retry-After and RateLimit-*. */
                429: {
                    headers: {
                        [name: string]: unknown;
                    };
                    content: {
                        "application/problem+json": components["schemas"]["Problem"];
                    };
                };
                /** @description An error, as RFC 9457 problem+json. */
                default: {
                    headers: {
                        [name: string]: unknown;
                    };
                    content: {
                        "application/problem+json": components["schemas"]["Problem"];
                    };
                };
            };
        };
        put?: never;
        /** Creates an agent. */
        post: {
            parameters: {
                query?: never;
                header?: never;
                path: {
                    org_id: string;
                };
                cookie?: never;
            };
            requestBody: {
                content: {
                    "application/json": components["schemas"]["CreateAgent"];
                };
            };
            responses: {
                201: {
                    headers: {
                        [name: string]: unknown;
                    };
                    content: {
                        "application/json": components["schemas"]["Agent"];
                    };
                };
                /** @description No valid bearer token. */
                401: {
                    headers: {
                        [name: string]: unknown;
                    };
                    content: {
                        "application/problem+json": components["schemas"]["Problem"];
                    };
                };
                /** @description No such resource, or an org the caller is not a member of. */
                404: {
                    headers: {
                        [name: string]: unknown;
                    };
                    content: {
                        "application/problem+json": components["schemas"]["Problem"];
                    };
                };
                /** @description Rate limited; see Retry-After and RateLimit-*. */
                429: {
                    headers: {
                        [name: string]: unknown;
                    };
                    content: {
                        "application/problem+json": components["schemas"]["Problem"];
                    };
                };
                /** @description An error, as RFC 9457 problem+json. */
                default: {
                    headers: {
                        [name: string]: unknown;
                    };
                    content: {
                        "application/problem+json": components["schemas"]["Problem"];
                    };
                };
            };
        };
        delete?: never;
        options?: never;
        head?: never;
        patch?: never;
        trace?: never;
    };
    "/v1/orgs/{org_id}/agents/{agent_id}": {
        parameters: {
            query?: never;
            header?: never;
            path?: never;
            cookie?: never;
        };
        /** One agent. */
        get: {
            parameters: {
                query?: never;
                header?: never;
                path: {
                    org_id: string;
                    agent_id: string;
                };
                cookie?: never;
            };
            requestBody?: never;
            responses: {
                200: {
                    headers: {
                        [name: string]: unknown;
                    };
                    content: {
                        "application/json": components["schemas"]["Agent"];
                    };
                };
                /** @description No valid bearer token. */
                401: {
                    headers: {
                        [name: string]: unknown;
                    };
                    content: {
                        "application/problem+json": components["schemas"]["Problem"];
                    };
                };
                /** @description No such resource, or an org the caller is not a member of. */
                404: {
                    headers: {
                        [name: string]: unknown;
                    };
                    content: {
                        "application/problem+json": components["schemas"]["Problem"];
                    };
                };
                /** @description Rate limited; see Retry-After and RateLimit-*. */
                429: {
                    headers: {
                        [name: string]: unknown;
                    };
                    content: {
                        "application/problem+json": components["schemas"]["Problem"];
                    };
                };
                /** @description An error, as RFC 9457 problem+json. */
                default: {
                    headers: {
                        [name: string]: unknown;
                    };
                    content: {
                        "application/problem+json": components["schemas"]["Problem"];
                    };
                };
            };
        };
        put?: never;
        post?: never;
        /** Deletes the agent. */
        delete: {
            parameters: {
                query?: never;
                header?: never;
                path: {
                    org_id: string;
                    agent_id: string;
                };
                cookie?: never;
            };
            requestBody?: never;
            responses: {
                204: {
                    headers: {
                        [name: string]: unknown;
                    };
                    content?: never;
                };
                /** @description No valid bearer token. */
                401: {
                    headers: {
                        [name: string]: unknown;
                    };
                    content: {
                        "application/problem+json": components["schemas"]["Problem"];
                    };
                };
                /** @description No such resource, or an org the caller is not a member of. */
                404: {
                    headers: {
                        [name: string]: unknown;
                    };
                    content: {
                        "application/problem+json": components["schemas"]["Problem"];
                    };
                };
                /** @description Rate limited; see Retry-After and RateLimit-*. */
                429: {
                    headers: {
                        [name: string]: unknown;
                    };
                    content: {
                        "application/problem+json": components["schemas"]["Problem"];
                    };
                };
                /** @description An error, as RFC 9457 problem+json. */
                default: {
                    headers: {
                        [name: string]: unknown;
                    };
                    content: {
                        "application/problem+json": components["schemas"]["Problem"];
                    };
                };
            };
        };
        options?: never;
        head?: never;
        /** Changes the fields present in the body. */
        patch: {
            parameters: {
                query?: never;
                header?: never;
                path: {
                    org_id: string;
                    agent_id: string;
                };
                cookie?: never;
            };
            requestBody: {
                content: {
                    "application/json": components["schemas"]["UpdateAgent"];
                };
            };
            responses: {
                200: {
                    headers: {
                        [name: string]: unknown;
                    };
                    content: {
                        "application/json": components["schemas"]["Agent"];
                    };
                };
                /** @description No valid bearer token. */
                401: {
                    headers: {
                        [name: string]: unknown;
                    };
                    content: {
                        "application/problem+json": components["schemas"]["Problem"];
                    };
                };
                /** @description No such resource, or an org the caller is not a member of. */
                404: {
                    headers: {
                        [name: string]: unknown;
                    };
                    content: {
                        "application/problem+json": components["schemas"]["Problem"];
                    };
                };
                /** @description Rate limited; see Retry-After and RateLimit-*. */
                429: {
                    headers: {
                        [name: string]: unknown;
                    };
                    content: {
                        "application/problem+json": components["schemas"]["Problem"];
                    };
                };
                /** @description An error, as RFC 9457 problem+json. */
                default: {
                    headers: {
                        [name: string]: unknown;
                    };
                    content: {
                        "application/problem+json": components["schemas"]["Problem"];
                    };
                };
            };
        };
        trace?: never;
    };
    "/v1/orgs/{org_id}/agents/{agent_id}/routes": {
        parameters: {
            query?: never;
            header?: never;
            path?: never;
            cookie?: never;
        };
        /** The agent's routes, by connection and pipeline. */
        get: {
            parameters: {
                query?: never;
                header?: never;
                path: {
                    org_id: string;
                    agent_id: string;
                };
                cookie?: never;
            };
            requestBody?: never;
            responses: {
                200: {
                    headers: {
                        [name: string]: unknown;
                    };
                    content: {
                        "application/json": components["schemas"]["Route"][];
                    };
                };
                /** @description No valid bearer token. */
                401: {
                    headers: {
                        [name: string]: unknown;
                    };
                    content: {
                        "application/problem+json": components["schemas"]["Problem"];
                    };
                };
                /** @description No such resource, or an org the caller is not a member of. */
                404: {
                    headers: {
                        [name: string]: unknown;
                    };
                    content: {
                        "application/problem+json": components["schemas"]["Problem"];
                    };
                };
                /** @description Rate limited; see Retry-After and RateLimit-*. */
                429: {
                    headers: {
                        [name: string]: unknown;
                    };
                    content: {
                        "application/problem+json": components["schemas"]["Problem"];
                    };
                };
                /** @description An error, as RFC 9457 problem+json. */
                default: {
                    headers: {
                        [name: string]: unknown;
                    };
                    content: {
                        "application/problem+json": components["schemas"]["Problem"];
                    };
                };
            };
        };
        /** Replaces the agent's routes: `[{connection_id, pipeline_id, stage_ids: [..] | "all"}]`. */
        put: {
            parameters: {
                query?: never;
                header?: never;
                path: {
                    org_id: string;
                    agent_id: string;
                };
                cookie?: never;
            };
            requestBody: {
                content: {
                    "application/json": components["schemas"]["Route"][];
                };
            };
            responses: {
                200: {
                    headers: {
                        [name: string]: unknown;
                    };
                    content: {
                        "application/json": components["schemas"]["Route"][];
                    };
                };
                /** @description No valid bearer token. */
                401: {
                    headers: {
                        [name: string]: unknown;
                    };
                    content: {
                        "application/problem+json": components["schemas"]["Problem"];
                    };
                };
                /** @description No such resource, or an org the caller is not a member of. */
                404: {
                    headers: {
                        [name: string]: unknown;
                    };
                    content: {
                        "application/problem+json": components["schemas"]["Problem"];
                    };
                };
                /** @description Another active agent works one of these stages */
                409: {
                    headers: {
                        [name: string]: unknown;
                    };
                    content: {
                        "application/problem+json": components["schemas"]["Problem"];
                    };
                };
                /** @description Rate limited; see Retry-After and RateLimit-*. */
                429: {
                    headers: {
                        [name: string]: unknown;
                    };
                    content: {
                        "application/problem+json": components["schemas"]["Problem"];
                    };
                };
                /** @description An error, as RFC 9457 problem+json. */
                default: {
                    headers: {
                        [name: string]: unknown;
                    };
                    content: {
                        "application/problem+json": components["schemas"]["Problem"];
                    };
                };
            };
        };
        post?: never;
        delete?: never;
        options?: never;
        head?: never;
        patch?: never;
        trace?: never;
    };
    "/v1/orgs/{org_id}/agents/{agent_id}/status": {
        parameters: {
            query?: never;
            header?: never;
            path?: never;
            cookie?: never;
        };
        get?: never;
        put?: never;
        /** Sets the agent's status. */
        post: {
            parameters: {
                query?: never;
                header?: never;
                path: {
                    org_id: string;
                    agent_id: string;
                };
                cookie?: never;
            };
            requestBody: {
                content: {
                    "application/json": components["schemas"]["SetStatus"];
                };
            };
            responses: {
                200: {
                    headers: {
                        [name: string]: unknown;
                    };
                    content: {
                        "application/json": components["schemas"]["Agent"];
                    };
                };
                /** @description No valid bearer token. */
                401: {
                    headers: {
                        [name: string]: unknown;
                    };
                    content: {
                        "application/problem+json": components["schemas"]["Problem"];
                    };
                };
                /** @description No such resource, or an org the caller is not a member of. */
                404: {
                    headers: {
                        [name: string]: unknown;
                    };
                    content: {
                        "application/problem+json": components["schemas"]["Problem"];
                    };
                };
                /** @description Rate limited; see Retry-After and RateLimit-*. */
                429: {
                    headers: {
                        [name: string]: unknown;
                    };
                    content: {
                        "application/problem+json": components["schemas"]["Problem"];
                    };
                };
                /** @description An error, as RFC 9457 problem+json. */
                default: {
                    headers: {
                        [name: string]: unknown;
                    };
                    content: {
                        "application/problem+json": components["schemas"]["Problem"];
                    };
                };
            };
        };
        delete?: never;
        options?: never;
        head?: never;
        patch?: never;
        trace?: never;
    };
    "/v1/orgs/{org_id}/agents/{agent_id}/test-chat": {
        parameters: {
            query?: never;
            header?: never;
            path?: never;
            cookie?: never;
        };
        get?: never;
        put?: never;
        /** Runs the agent on the messages without touching Kommo. */
        post: {
            parameters: {
                query?: never;
                header?: never;
                path: {
                    org_id: string;
                    agent_id: string;
                };
                cookie?: never;
            };
            requestBody: {
                content: {
                    "application/json": components["schemas"]["TestChat"];
                };
            };
            responses: {
                /** @description The answer; with `Accept: text/event-stream`, server-sent events `sources`, `delta`, `tool`, `done` (or `error`) */
                200: {
                    headers: {
                        [name: string]: unknown;
                    };
                    content: {
                        "application/json": components["schemas"]["TestChatAnswer"];
                    };
                };
                /** @description No valid bearer token. */
                401: {
                    headers: {
                        [name: string]: unknown;
                    };
                    content: {
                        "application/problem+json": components["schemas"]["Problem"];
                    };
                };
                /** @description No such resource, or an org the caller is not a member of. */
                404: {
                    headers: {
                        [name: string]: unknown;
                    };
                    content: {
                        "application/problem+json": components["schemas"]["Problem"];
                    };
                };
                /** @description No model provider is configured */
                409: {
                    headers: {
                        [name: string]: unknown;
                    };
                    content: {
                        "application/problem+json": components["schemas"]["Problem"];
                    };
                };
                /** @description The org's daily token quota is used up */
                429: {
                    headers: {
                        [name: string]: unknown;
                    };
                    content: {
                        "application/problem+json": components["schemas"]["Problem"];
                    };
                };
                /** @description An error, as RFC 9457 problem+json. */
                default: {
                    headers: {
                        [name: string]: unknown;
                    };
                    content: {
                        "application/problem+json": components["schemas"]["Problem"];
                    };
                };
            };
        };
        delete?: never;
        options?: never;
        head?: never;
        patch?: never;
        trace?: never;
    };
    "/v1/orgs/{org_id}/ai-settings": {
        parameters: {
            query?: never;
            header?: never;
            path?: never;
            cookie?: never;
        };
        /** The org's provider settings. */
        get: {
            parameters: {
                query?: never;
                header?: never;
                path: {
                    org_id: string;
                };
                cookie?: never;
            };
            requestBody?: never;
            responses: {
                200: {
                    headers: {
                        [name: string]: unknown;
                    };
                    content: {
                        "application/json": components["schemas"]["AiSettingsView"];
                    };
                };
                /** @description No valid bearer token. */
                401: {
                    headers: {
                        [name: string]: unknown;
                    };
                    content: {
                        "application/problem+json": components["schemas"]["Problem"];
                    };
                };
                /** @description Not an owner or admin */
                403: {
                    headers: {
                        [name: string]: unknown;
                    };
                    content: {
                        "application/problem+json": components["schemas"]["Problem"];
                    };
                };
                /** @description No such resource, or an org the caller is not a member of. */
                404: {
                    headers: {
                        [name: string]: unknown;
                    };
                    content: {
                        "application/problem+json": components["schemas"]["Problem"];
                    };
                };
                /** @description Rate limited; see Retry-After and RateLimit-*. */
                429: {
                    headers: {
                        [name: string]: unknown;
                    };
                    content: {
                        "application/problem+json": components["schemas"]["Problem"];
                    };
                };
                /** @description An error, as RFC 9457 problem+json. */
                default: {
                    headers: {
                        [name: string]: unknown;
                    };
                    content: {
                        "application/problem+json": components["schemas"]["Problem"];
                    };
                };
            };
        };
        /** Sets the org's own provider, models and key. */
        put: {
            parameters: {
                query?: never;
                header?: never;
                path: {
                    org_id: string;
                };
                cookie?: never;
            };
            requestBody: {
                content: {
                    "application/json": components["schemas"]["PutAiSettings"];
                };
            };
            responses: {
                200: {
                    headers: {
                        [name: string]: unknown;
                    };
                    content: {
                        "application/json": components["schemas"]["AiSettingsView"];
                    };
                };
                /** @description No valid bearer token. */
                401: {
                    headers: {
                        [name: string]: unknown;
                    };
                    content: {
                        "application/problem+json": components["schemas"]["Problem"];
                    };
                };
                /** @description Not an owner or admin */
                403: {
                    headers: {
                        [name: string]: unknown;
                    };
                    content: {
                        "application/problem+json": components["schemas"]["Problem"];
                    };
                };
                /** @description No such resource, or an org the caller is not a member of. */
                404: {
                    headers: {
                        [name: string]: unknown;
                    };
                    content: {
                        "application/problem+json": components["schemas"]["Problem"];
                    };
                };
                /** @description A field is invalid, or the base URL breaks the SSRF rule */
                422: {
                    headers: {
                        [name: string]: unknown;
                    };
                    content: {
                        "application/problem+json": components["schemas"]["Problem"];
                    };
                };
                /** @description Rate limited; see Retry-After and RateLimit-*. */
                429: {
                    headers: {
                        [name: string]: unknown;
                    };
                    content: {
                        "application/problem+json": components["schemas"]["Problem"];
                    };
                };
                /** @description An error, as RFC 9457 problem+json. */
                default: {
                    headers: {
                        [name: string]: unknown;
                    };
                    content: {
                        "application/problem+json": components["schemas"]["Problem"];
                    };
                };
            };
        };
        post?: never;
        /** Removes the org's settings: its calls use the deployment's provider again. */
        delete: {
            parameters: {
                query?: never;
                header?: never;
                path: {
                    org_id: string;
                };
                cookie?: never;
            };
            requestBody?: never;
            responses: {
                204: {
                    headers: {
                        [name: string]: unknown;
                    };
                    content?: never;
                };
                /** @description No valid bearer token. */
                401: {
                    headers: {
                        [name: string]: unknown;
                    };
                    content: {
                        "application/problem+json": components["schemas"]["Problem"];
                    };
                };
                /** @description Not an owner or admin */
                403: {
                    headers: {
                        [name: string]: unknown;
                    };
                    content: {
                        "application/problem+json": components["schemas"]["Problem"];
                    };
                };
                /** @description The org has no settings of its own */
                404: {
                    headers: {
                        [name: string]: unknown;
                    };
                    content: {
                        "application/problem+json": components["schemas"]["Problem"];
                    };
                };
                /** @description Rate limited; see Retry-After and RateLimit-*. */
                429: {
                    headers: {
                        [name: string]: unknown;
                    };
                    content: {
                        "application/problem+json": components["schemas"]["Problem"];
                    };
                };
                /** @description An error, as RFC 9457 problem+json. */
                default: {
                    headers: {
                        [name: string]: unknown;
                    };
                    content: {
                        "application/problem+json": components["schemas"]["Problem"];
                    };
                };
            };
        };
        options?: never;
        head?: never;
        patch?: never;
        trace?: never;
    };
    "/v1/orgs/{org_id}/audit-logs": {
        parameters: {
            query?: never;
            header?: never;
            path?: never;
            cookie?: never;
        };
        /** Who changed what, newest first (admins and owners; members get 403). */
        get: {
            parameters: {
                query?: {
                    limit?: number;
                    cursor?: string;
                };
                header?: never;
                path: {
                    org_id: string;
                };
                cookie?: never;
            };
            requestBody?: never;
            responses: {
                200: {
                    headers: {
                        [name: string]: unknown;
                    };
                    content: {
                        "application/json": {
                            data: {
                                action: string;
                                actor_type: string;
                                /** Format: uuid */
                                actor_user_id?: string | null;
                                changes: Record<string, unknown>;
                                /** Format: date-time */
                                created_at: string;
                                entity: string;
                                entity_id?: string | null;
                                /** Format: uuid */
                                id: string;
                                ip?: string | null;
                                request_id?: string | null;
                                user_agent?: string | null;
                            }[];
                            next_cursor?: string | null;
                        };
                    };
                };
                /** @description No valid bearer token. */
                401: {
                    headers: {
                        [name: string]: unknown;
                    };
                    content: {
                        "application/problem+json": components["schemas"]["Problem"];
                    };
                };
                /** @description No such resource, or an org the caller is not a member of. */
                404: {
                    headers: {
                        [name: string]: unknown;
                    };
                    content: {
                        "application/problem+json": components["schemas"]["Problem"];
                    };
                };
                /** @description Rate limited; see Retry-After and RateLimit-*. */
                429: {
                    headers: {
                        [name: string]: unknown;
                    };
                    content: {
                        "application/problem+json": components["schemas"]["Problem"];
                    };
                };
                /** @description An error, as RFC 9457 problem+json. */
                default: {
                    headers: {
                        [name: string]: unknown;
                    };
                    content: {
                        "application/problem+json": components["schemas"]["Problem"];
                    };
                };
            };
        };
        put?: never;
        post?: never;
        delete?: never;
        options?: never;
        head?: never;
        patch?: never;
        trace?: never;
    };
    "/v1/orgs/{org_id}/conversations": {
        parameters: {
            query?: never;
            header?: never;
            path?: never;
            cookie?: never;
        };
        /** The org's conversations, newest first. */
        get: {
            parameters: {
                query?: {
                    agent_id?: string;
                    status?: components["schemas"]["ConversationStatus"];
                    /** @description Kommo's lead id. */
                    lead_id?: number;
                    /** @description 1..=100, default 25. */
                    limit?: number;
                    cursor?: string;
                };
                header?: never;
                path: {
                    org_id: string;
                };
                cookie?: never;
            };
            requestBody?: never;
            responses: {
                200: {
                    headers: {
                        [name: string]: unknown;
                    };
                    content: {
                        "application/json": {
                            data: {
                                /** Format: uuid */
                                agent_id?: string | null;
                                /** @description Kommo's chat id. */
                                chat_id: string;
                                /** Format: uuid */
                                connection_id: string;
                                /** Format: int64 */
                                contact_id?: number | null;
                                /** Format: date-time */
                                created_at: string;
                                handoff_reason?: string | null;
                                /** Format: uuid */
                                id: string;
                                /** Format: date-time */
                                last_message_at: string;
                                /** @description The lead as last read from Kommo. */
                                lead?: Record<string, unknown> | null;
                                /** Format: int64 */
                                lead_id?: number | null;
                                /** @description Why the agent is not answering right now, when it is not. */
                                notice?: string | null;
                                /** Format: uuid */
                                org_id: string;
                                /** @description telegram, whatsapp, instagram, … */
                                origin?: string | null;
                                /**
                                 * Format: date-time
                                 * @description When a reply waiting on the response delay or working hours is due.
                                 */
                                reply_due_at?: string | null;
                                status: components["schemas"]["ConversationStatus"];
                                talk_id?: string | null;
                                /** Format: date-time */
                                updated_at: string;
                            }[];
                            next_cursor?: string | null;
                        };
                    };
                };
                /** @description No valid bearer token. */
                401: {
                    headers: {
                        [name: string]: unknown;
                    };
                    content: {
                        "application/problem+json": components["schemas"]["Problem"];
                    };
                };
                /** @description No such resource, or an org the caller is not a member of. */
                404: {
                    headers: {
                        [name: string]: unknown;
                    };
                    content: {
                        "application/problem+json": components["schemas"]["Problem"];
                    };
                };
                /** @description Rate limited; see Retry-After and RateLimit-*. */
                429: {
                    headers: {
                        [name: string]: unknown;
                    };
                    content: {
                        "application/problem+json": components["schemas"]["Problem"];
                    };
                };
                /** @description An error, as RFC 9457 problem+json. */
                default: {
                    headers: {
                        [name: string]: unknown;
                    };
                    content: {
                        "application/problem+json": components["schemas"]["Problem"];
                    };
                };
            };
        };
        put?: never;
        post?: never;
        delete?: never;
        options?: never;
        head?: never;
        patch?: never;
        trace?: never;
    };
    "/v1/orgs/{org_id}/conversations/{conversation_id}": {
        parameters: {
            query?: never;
            header?: never;
            path?: never;
            cookie?: never;
        };
        /** One conversation, with a page of its messages. */
        get: {
            parameters: {
                query?: {
                    /** @description Messages per page, 1..=100, default 25. */
                    limit?: number;
                    /** @description `messages.next_cursor` of the previous page. */
                    cursor?: string;
                };
                header?: never;
                path: {
                    org_id: string;
                    conversation_id: string;
                };
                cookie?: never;
            };
            requestBody?: never;
            responses: {
                200: {
                    headers: {
                        [name: string]: unknown;
                    };
                    content: {
                        "application/json": components["schemas"]["ConversationDetail"];
                    };
                };
                /** @description No valid bearer token. */
                401: {
                    headers: {
                        [name: string]: unknown;
                    };
                    content: {
                        "application/problem+json": components["schemas"]["Problem"];
                    };
                };
                /** @description No such resource, or an org the caller is not a member of. */
                404: {
                    headers: {
                        [name: string]: unknown;
                    };
                    content: {
                        "application/problem+json": components["schemas"]["Problem"];
                    };
                };
                /** @description Rate limited; see Retry-After and RateLimit-*. */
                429: {
                    headers: {
                        [name: string]: unknown;
                    };
                    content: {
                        "application/problem+json": components["schemas"]["Problem"];
                    };
                };
                /** @description An error, as RFC 9457 problem+json. */
                default: {
                    headers: {
                        [name: string]: unknown;
                    };
                    content: {
                        "application/problem+json": components["schemas"]["Problem"];
                    };
                };
            };
        };
        put?: never;
        post?: never;
        delete?: never;
        options?: never;
        head?: never;
        patch?: never;
        trace?: never;
    };
    "/v1/orgs/{org_id}/conversations/{conversation_id}/handoff": {
        parameters: {
            query?: never;
            header?: never;
            path?: never;
            cookie?: never;
        };
        get?: never;
        put?: never;
        /** A person takes the conversation over: the agent stays silent there until resumed. */
        post: {
            parameters: {
                query?: never;
                header?: never;
                path: {
                    org_id: string;
                    conversation_id: string;
                };
                cookie?: never;
            };
            requestBody: {
                content: {
                    "application/json": components["schemas"]["Handoff"];
                };
            };
            responses: {
                200: {
                    headers: {
                        [name: string]: unknown;
                    };
                    content: {
                        "application/json": components["schemas"]["Conversation"];
                    };
                };
                /** @description No valid bearer token. */
                401: {
                    headers: {
                        [name: string]: unknown;
                    };
                    content: {
                        "application/problem+json": components["schemas"]["Problem"];
                    };
                };
                /** @description No such resource, or an org the caller is not a member of. */
                404: {
                    headers: {
                        [name: string]: unknown;
                    };
                    content: {
                        "application/problem+json": components["schemas"]["Problem"];
                    };
                };
                /** @description Already handed off */
                409: {
                    headers: {
                        [name: string]: unknown;
                    };
                    content: {
                        "application/problem+json": components["schemas"]["Problem"];
                    };
                };
                /** @description Rate limited; see Retry-After and RateLimit-*. */
                429: {
                    headers: {
                        [name: string]: unknown;
                    };
                    content: {
                        "application/problem+json": components["schemas"]["Problem"];
                    };
                };
                /** @description An error, as RFC 9457 problem+json. */
                default: {
                    headers: {
                        [name: string]: unknown;
                    };
                    content: {
                        "application/problem+json": components["schemas"]["Problem"];
                    };
                };
            };
        };
        delete?: never;
        options?: never;
        head?: never;
        patch?: never;
        trace?: never;
    };
    "/v1/orgs/{org_id}/conversations/{conversation_id}/resume": {
        parameters: {
            query?: never;
            header?: never;
            path?: never;
            cookie?: never;
        };
        get?: never;
        put?: never;
        /** The agent answers the conversation again (from the next message on). */
        post: {
            parameters: {
                query?: never;
                header?: never;
                path: {
                    org_id: string;
                    conversation_id: string;
                };
                cookie?: never;
            };
            requestBody?: never;
            responses: {
                200: {
                    headers: {
                        [name: string]: unknown;
                    };
                    content: {
                        "application/json": components["schemas"]["Conversation"];
                    };
                };
                /** @description No valid bearer token. */
                401: {
                    headers: {
                        [name: string]: unknown;
                    };
                    content: {
                        "application/problem+json": components["schemas"]["Problem"];
                    };
                };
                /** @description No such resource, or an org the caller is not a member of. */
                404: {
                    headers: {
                        [name: string]: unknown;
                    };
                    content: {
                        "application/problem+json": components["schemas"]["Problem"];
                    };
                };
                /** @description Not handed off */
                409: {
                    headers: {
                        [name: string]: unknown;
                    };
                    content: {
                        "application/problem+json": components["schemas"]["Problem"];
                    };
                };
                /** @description Rate limited; see Retry-After and RateLimit-*. */
                429: {
                    headers: {
                        [name: string]: unknown;
                    };
                    content: {
                        "application/problem+json": components["schemas"]["Problem"];
                    };
                };
                /** @description An error, as RFC 9457 problem+json. */
                default: {
                    headers: {
                        [name: string]: unknown;
                    };
                    content: {
                        "application/problem+json": components["schemas"]["Problem"];
                    };
                };
            };
        };
        delete?: never;
        options?: never;
        head?: never;
        patch?: never;
        trace?: never;
    };
    "/v1/orgs/{org_id}/crm/connections": {
        parameters: {
            query?: never;
            header?: never;
            path?: never;
            cookie?: never;
        };
        /** The org's connections, newest first; never their tokens. */
        get: {
            parameters: {
                query?: {
                    provider?: string;
                    limit?: number;
                    cursor?: string;
                };
                header?: never;
                path: {
                    org_id: string;
                };
                cookie?: never;
            };
            requestBody?: never;
            responses: {
                200: {
                    headers: {
                        [name: string]: unknown;
                    };
                    content: {
                        "application/json": {
                            data: {
                                /** Format: int64 */
                                account_id?: number | null;
                                base_domain: string;
                                /** Format: date-time */
                                created_at: string;
                                has_refresh_token: boolean;
                                /** Format: uuid */
                                id: string;
                                last_error?: string | null;
                                /** Format: uuid */
                                org_id: string;
                                provider: components["schemas"]["Provider"];
                                scope?: string | null;
                                status: components["schemas"]["ConnectionStatus"];
                                /** @description `{status, pipelines: {status, started_at, finished_at, count, error}, contacts: {…}}` */
                                sync: Record<string, unknown>;
                                /** Format: date-time */
                                token_expires_at?: string | null;
                                /** Format: date-time */
                                updated_at: string;
                            }[];
                            next_cursor?: string | null;
                        };
                    };
                };
                /** @description No valid bearer token. */
                401: {
                    headers: {
                        [name: string]: unknown;
                    };
                    content: {
                        "application/problem+json": components["schemas"]["Problem"];
                    };
                };
                /** @description No such resource, or an org the caller is not a member of. */
                404: {
                    headers: {
                        [name: string]: unknown;
                    };
                    content: {
                        "application/problem+json": components["schemas"]["Problem"];
                    };
                };
                /** @description Rate limited; see Retry-After and RateLimit-*. */
                429: {
                    headers: {
                        [name: string]: unknown;
                    };
                    content: {
                        "application/problem+json": components["schemas"]["Problem"];
                    };
                };
                /** @description An error, as RFC 9457 problem+json. */
                default: {
                    headers: {
                        [name: string]: unknown;
                    };
                    content: {
                        "application/problem+json": components["schemas"]["Problem"];
                    };
                };
            };
        };
        put?: never;
        /** Stores a connection from a token the user pasted, after Kommo accepted it. */
        post: {
            parameters: {
                query?: never;
                header?: never;
                path: {
                    org_id: string;
                };
                cookie?: never;
            };
            requestBody: {
                content: {
                    "application/json": components["schemas"]["CreateConnection"];
                };
            };
            responses: {
                201: {
                    headers: {
                        [name: string]: unknown;
                    };
                    content: {
                        "application/json": components["schemas"]["ConnectionCreated"];
                    };
                };
                /** @description No valid bearer token. */
                401: {
                    headers: {
                        [name: string]: unknown;
                    };
                    content: {
                        "application/problem+json": components["schemas"]["Problem"];
                    };
                };
                /** @description No such resource, or an org the caller is not a member of. */
                404: {
                    headers: {
                        [name: string]: unknown;
                    };
                    content: {
                        "application/problem+json": components["schemas"]["Problem"];
                    };
                };
                /** @description Rate limited; see Retry-After and RateLimit-*. */
                429: {
                    headers: {
                        [name: string]: unknown;
                    };
                    content: {
                        "application/problem+json": components["schemas"]["Problem"];
                    };
                };
                /** @description An error, as RFC 9457 problem+json. */
                default: {
                    headers: {
                        [name: string]: unknown;
                    };
                    content: {
                        "application/problem+json": components["schemas"]["Problem"];
                    };
                };
            };
        };
        delete?: never;
        options?: never;
        head?: never;
        patch?: never;
        trace?: never;
    };
    "/v1/orgs/{org_id}/crm/connections/{connection_id}": {
        parameters: {
            query?: never;
            header?: never;
            path?: never;
            cookie?: never;
        };
        /** One connection: status, account, token expiry, sync state, last error. */
        get: {
            parameters: {
                query?: never;
                header?: never;
                path: {
                    org_id: string;
                    connection_id: string;
                };
                cookie?: never;
            };
            requestBody?: never;
            responses: {
                200: {
                    headers: {
                        [name: string]: unknown;
                    };
                    content: {
                        "application/json": components["schemas"]["Connection"];
                    };
                };
                /** @description No valid bearer token. */
                401: {
                    headers: {
                        [name: string]: unknown;
                    };
                    content: {
                        "application/problem+json": components["schemas"]["Problem"];
                    };
                };
                /** @description No such resource, or an org the caller is not a member of. */
                404: {
                    headers: {
                        [name: string]: unknown;
                    };
                    content: {
                        "application/problem+json": components["schemas"]["Problem"];
                    };
                };
                /** @description Rate limited; see Retry-After and RateLimit-*. */
                429: {
                    headers: {
                        [name: string]: unknown;
                    };
                    content: {
                        "application/problem+json": components["schemas"]["Problem"];
                    };
                };
                /** @description An error, as RFC 9457 problem+json. */
                default: {
                    headers: {
                        [name: string]: unknown;
                    };
                    content: {
                        "application/problem+json": components["schemas"]["Problem"];
                    };
                };
            };
        };
        put?: never;
        post?: never;
        /** Deletes the connection and everything synced from it. */
        delete: {
            parameters: {
                query?: never;
                header?: never;
                path: {
                    org_id: string;
                    connection_id: string;
                };
                cookie?: never;
            };
            requestBody?: never;
            responses: {
                204: {
                    headers: {
                        [name: string]: unknown;
                    };
                    content?: never;
                };
                /** @description No valid bearer token. */
                401: {
                    headers: {
                        [name: string]: unknown;
                    };
                    content: {
                        "application/problem+json": components["schemas"]["Problem"];
                    };
                };
                /** @description No such resource, or an org the caller is not a member of. */
                404: {
                    headers: {
                        [name: string]: unknown;
                    };
                    content: {
                        "application/problem+json": components["schemas"]["Problem"];
                    };
                };
                /** @description Rate limited; see Retry-After and RateLimit-*. */
                429: {
                    headers: {
                        [name: string]: unknown;
                    };
                    content: {
                        "application/problem+json": components["schemas"]["Problem"];
                    };
                };
                /** @description An error, as RFC 9457 problem+json. */
                default: {
                    headers: {
                        [name: string]: unknown;
                    };
                    content: {
                        "application/problem+json": components["schemas"]["Problem"];
                    };
                };
            };
        };
        options?: never;
        head?: never;
        patch?: never;
        trace?: never;
    };
    "/v1/orgs/{org_id}/crm/connections/{connection_id}/chat-channel": {
        parameters: {
            query?: never;
            header?: never;
            path?: never;
            cookie?: never;
        };
        /** The connection's Chats channel (404 when none is set). */
        get: {
            parameters: {
                query?: never;
                header?: never;
                path: {
                    org_id: string;
                    connection_id: string;
                };
                cookie?: never;
            };
            requestBody?: never;
            responses: {
                200: {
                    headers: {
                        [name: string]: unknown;
                    };
                    content: {
                        "application/json": components["schemas"]["ChatChannelView"];
                    };
                };
                /** @description No valid bearer token. */
                401: {
                    headers: {
                        [name: string]: unknown;
                    };
                    content: {
                        "application/problem+json": components["schemas"]["Problem"];
                    };
                };
                /** @description No such resource, or an org the caller is not a member of. */
                404: {
                    headers: {
                        [name: string]: unknown;
                    };
                    content: {
                        "application/problem+json": components["schemas"]["Problem"];
                    };
                };
                /** @description Rate limited; see Retry-After and RateLimit-*. */
                429: {
                    headers: {
                        [name: string]: unknown;
                    };
                    content: {
                        "application/problem+json": components["schemas"]["Problem"];
                    };
                };
                /** @description An error, as RFC 9457 problem+json. */
                default: {
                    headers: {
                        [name: string]: unknown;
                    };
                    content: {
                        "application/problem+json": components["schemas"]["Problem"];
                    };
                };
            };
        };
        /** Sets the connection's Chats channel. */
        put: {
            parameters: {
                query?: never;
                header?: never;
                path: {
                    org_id: string;
                    connection_id: string;
                };
                cookie?: never;
            };
            requestBody: {
                content: {
                    "application/json": components["schemas"]["PutChatChannel"];
                };
            };
            responses: {
                200: {
                    headers: {
                        [name: string]: unknown;
                    };
                    content: {
                        "application/json": components["schemas"]["ChatChannelView"];
                    };
                };
                /** @description No valid bearer token. */
                401: {
                    headers: {
                        [name: string]: unknown;
                    };
                    content: {
                        "application/problem+json": components["schemas"]["Problem"];
                    };
                };
                /** @description No such resource, or an org the caller is not a member of. */
                404: {
                    headers: {
                        [name: string]: unknown;
                    };
                    content: {
                        "application/problem+json": components["schemas"]["Problem"];
                    };
                };
                /** @description Rate limited; see Retry-After and RateLimit-*. */
                429: {
                    headers: {
                        [name: string]: unknown;
                    };
                    content: {
                        "application/problem+json": components["schemas"]["Problem"];
                    };
                };
                /** @description An error, as RFC 9457 problem+json. */
                default: {
                    headers: {
                        [name: string]: unknown;
                    };
                    content: {
                        "application/problem+json": components["schemas"]["Problem"];
                    };
                };
            };
        };
        post?: never;
        /** Removes the connection's Chats channel: answers go as notes only. */
        delete: {
            parameters: {
                query?: never;
                header?: never;
                path: {
                    org_id: string;
                    connection_id: string;
                };
                cookie?: never;
            };
            requestBody?: never;
            responses: {
                204: {
                    headers: {
                        [name: string]: unknown;
                    };
                    content?: never;
                };
                /** @description No valid bearer token. */
                401: {
                    headers: {
                        [name: string]: unknown;
                    };
                    content: {
                        "application/problem+json": components["schemas"]["Problem"];
                    };
                };
                /** @description No such resource, or an org the caller is not a member of. */
                404: {
                    headers: {
                        [name: string]: unknown;
                    };
                    content: {
                        "application/problem+json": components["schemas"]["Problem"];
                    };
                };
                /** @description Rate limited; see Retry-After and RateLimit-*. */
                429: {
                    headers: {
                        [name: string]: unknown;
                    };
                    content: {
                        "application/problem+json": components["schemas"]["Problem"];
                    };
                };
                /** @description An error, as RFC 9457 problem+json. */
                default: {
                    headers: {
                        [name: string]: unknown;
                    };
                    content: {
                        "application/problem+json": components["schemas"]["Problem"];
                    };
                };
            };
        };
        options?: never;
        head?: never;
        patch?: never;
        trace?: never;
    };
    "/v1/orgs/{org_id}/crm/connections/{connection_id}/contacts": {
        parameters: {
            query?: never;
            header?: never;
            path?: never;
            cookie?: never;
        };
        /** The connection's synced contacts, paginated. */
        get: {
            parameters: {
                query?: {
                    limit?: number;
                    cursor?: string;
                };
                header?: never;
                path: {
                    org_id: string;
                    connection_id: string;
                };
                cookie?: never;
            };
            requestBody?: never;
            responses: {
                200: {
                    headers: {
                        [name: string]: unknown;
                    };
                    content: {
                        "application/json": {
                            data: {
                                custom_fields: Record<string, unknown>;
                                /** Format: date-time */
                                external_created_at?: string | null;
                                /** Format: int64 */
                                external_id: number;
                                /** Format: date-time */
                                external_updated_at?: string | null;
                                first_name?: string | null;
                                /** Format: uuid */
                                id: string;
                                last_name?: string | null;
                                name?: string | null;
                                /** Format: int64 */
                                responsible_user_id?: number | null;
                                /** Format: date-time */
                                synced_at: string;
                            }[];
                            next_cursor?: string | null;
                        };
                    };
                };
                /** @description No valid bearer token. */
                401: {
                    headers: {
                        [name: string]: unknown;
                    };
                    content: {
                        "application/problem+json": components["schemas"]["Problem"];
                    };
                };
                /** @description No such resource, or an org the caller is not a member of. */
                404: {
                    headers: {
                        [name: string]: unknown;
                    };
                    content: {
                        "application/problem+json": components["schemas"]["Problem"];
                    };
                };
                /** @description Rate limited; see Retry-After and RateLimit-*. */
                429: {
                    headers: {
                        [name: string]: unknown;
                    };
                    content: {
                        "application/problem+json": components["schemas"]["Problem"];
                    };
                };
                /** @description An error, as RFC 9457 problem+json. */
                default: {
                    headers: {
                        [name: string]: unknown;
                    };
                    content: {
                        "application/problem+json": components["schemas"]["Problem"];
                    };
                };
            };
        };
        put?: never;
        post?: never;
        delete?: never;
        options?: never;
        head?: never;
        patch?: never;
        trace?: never;
    };
    "/v1/orgs/{org_id}/crm/connections/{connection_id}/pipelines": {
        parameters: {
            query?: never;
            header?: never;
            path?: never;
            cookie?: never;
        };
        /** The connection's synced pipelines with their stages. */
        get: {
            parameters: {
                query?: never;
                header?: never;
                path: {
                    org_id: string;
                    connection_id: string;
                };
                cookie?: never;
            };
            requestBody?: never;
            responses: {
                200: {
                    headers: {
                        [name: string]: unknown;
                    };
                    content: {
                        "application/json": components["schemas"]["PipelineList"];
                    };
                };
                /** @description No valid bearer token. */
                401: {
                    headers: {
                        [name: string]: unknown;
                    };
                    content: {
                        "application/problem+json": components["schemas"]["Problem"];
                    };
                };
                /** @description No such resource, or an org the caller is not a member of. */
                404: {
                    headers: {
                        [name: string]: unknown;
                    };
                    content: {
                        "application/problem+json": components["schemas"]["Problem"];
                    };
                };
                /** @description Rate limited; see Retry-After and RateLimit-*. */
                429: {
                    headers: {
                        [name: string]: unknown;
                    };
                    content: {
                        "application/problem+json": components["schemas"]["Problem"];
                    };
                };
                /** @description An error, as RFC 9457 problem+json. */
                default: {
                    headers: {
                        [name: string]: unknown;
                    };
                    content: {
                        "application/problem+json": components["schemas"]["Problem"];
                    };
                };
            };
        };
        put?: never;
        post?: never;
        delete?: never;
        options?: never;
        head?: never;
        patch?: never;
        trace?: never;
    };
    "/v1/orgs/{org_id}/crm/connections/{connection_id}/sync": {
        parameters: {
            query?: never;
            header?: never;
            path?: never;
            cookie?: never;
        };
        get?: never;
        put?: never;
        /** Queues a sync of pipelines, contacts or both; 202 with the jobs. */
        post: {
            parameters: {
                query?: never;
                header?: never;
                path: {
                    org_id: string;
                    connection_id: string;
                };
                cookie?: never;
            };
            requestBody: {
                content: {
                    "application/json": components["schemas"]["SyncRequest"];
                };
            };
            responses: {
                202: {
                    headers: {
                        [name: string]: unknown;
                    };
                    content: {
                        "application/json": components["schemas"]["QueuedJobs"];
                    };
                };
                /** @description No valid bearer token. */
                401: {
                    headers: {
                        [name: string]: unknown;
                    };
                    content: {
                        "application/problem+json": components["schemas"]["Problem"];
                    };
                };
                /** @description No such resource, or an org the caller is not a member of. */
                404: {
                    headers: {
                        [name: string]: unknown;
                    };
                    content: {
                        "application/problem+json": components["schemas"]["Problem"];
                    };
                };
                /** @description Rate limited; see Retry-After and RateLimit-*. */
                429: {
                    headers: {
                        [name: string]: unknown;
                    };
                    content: {
                        "application/problem+json": components["schemas"]["Problem"];
                    };
                };
                /** @description An error, as RFC 9457 problem+json. */
                default: {
                    headers: {
                        [name: string]: unknown;
                    };
                    content: {
                        "application/problem+json": components["schemas"]["Problem"];
                    };
                };
            };
        };
        delete?: never;
        options?: never;
        head?: never;
        patch?: never;
        trace?: never;
    };
    "/v1/orgs/{org_id}/crm/connections/{connection_id}/token/refresh": {
        parameters: {
            query?: never;
            header?: never;
            path?: never;
            cookie?: never;
        };
        get?: never;
        put?: never;
        /** Refreshes the connection's tokens now (concurrent requests share one refresh). */
        post: {
            parameters: {
                query?: never;
                header?: never;
                path: {
                    org_id: string;
                    connection_id: string;
                };
                cookie?: never;
            };
            requestBody?: never;
            responses: {
                200: {
                    headers: {
                        [name: string]: unknown;
                    };
                    content: {
                        "application/json": components["schemas"]["RefreshedToken"];
                    };
                };
                /** @description No valid bearer token. */
                401: {
                    headers: {
                        [name: string]: unknown;
                    };
                    content: {
                        "application/problem+json": components["schemas"]["Problem"];
                    };
                };
                /** @description No such resource, or an org the caller is not a member of. */
                404: {
                    headers: {
                        [name: string]: unknown;
                    };
                    content: {
                        "application/problem+json": components["schemas"]["Problem"];
                    };
                };
                /** @description Rate limited; see Retry-After and RateLimit-*. */
                429: {
                    headers: {
                        [name: string]: unknown;
                    };
                    content: {
                        "application/problem+json": components["schemas"]["Problem"];
                    };
                };
                /** @description An error, as RFC 9457 problem+json. */
                default: {
                    headers: {
                        [name: string]: unknown;
                    };
                    content: {
                        "application/problem+json": components["schemas"]["Problem"];
                    };
                };
            };
        };
        delete?: never;
        options?: never;
        head?: never;
        patch?: never;
        trace?: never;
    };
    "/v1/orgs/{org_id}/crm/connections/{connection_id}/webhook-secret": {
        parameters: {
            query?: never;
            header?: never;
            path?: never;
            cookie?: never;
        };
        get?: never;
        put?: never;
        /** Replaces the connection's webhook secret; returns the new URL once. */
        post: {
            parameters: {
                query?: never;
                header?: never;
                path: {
                    org_id: string;
                    connection_id: string;
                };
                cookie?: never;
            };
            requestBody?: never;
            responses: {
                200: {
                    headers: {
                        [name: string]: unknown;
                    };
                    content: {
                        "application/json": components["schemas"]["WebhookSecret"];
                    };
                };
                /** @description No valid bearer token. */
                401: {
                    headers: {
                        [name: string]: unknown;
                    };
                    content: {
                        "application/problem+json": components["schemas"]["Problem"];
                    };
                };
                /** @description No such resource, or an org the caller is not a member of. */
                404: {
                    headers: {
                        [name: string]: unknown;
                    };
                    content: {
                        "application/problem+json": components["schemas"]["Problem"];
                    };
                };
                /** @description Rate limited; see Retry-After and RateLimit-*. */
                429: {
                    headers: {
                        [name: string]: unknown;
                    };
                    content: {
                        "application/problem+json": components["schemas"]["Problem"];
                    };
                };
                /** @description An error, as RFC 9457 problem+json. */
                default: {
                    headers: {
                        [name: string]: unknown;
                    };
                    content: {
                        "application/problem+json": components["schemas"]["Problem"];
                    };
                };
            };
        };
        delete?: never;
        options?: never;
        head?: never;
        patch?: never;
        trace?: never;
    };
    "/v1/orgs/{org_id}/crm/credentials/{provider}": {
        parameters: {
            query?: never;
            header?: never;
            path?: never;
            cookie?: never;
        };
        /** The org's integration credentials (never the secret). */
        get: {
            parameters: {
                query?: never;
                header?: never;
                path: {
                    org_id: string;
                    provider: string;
                };
                cookie?: never;
            };
            requestBody?: never;
            responses: {
                200: {
                    headers: {
                        [name: string]: unknown;
                    };
                    content: {
                        "application/json": components["schemas"]["CredentialsView"];
                    };
                };
                /** @description No valid bearer token. */
                401: {
                    headers: {
                        [name: string]: unknown;
                    };
                    content: {
                        "application/problem+json": components["schemas"]["Problem"];
                    };
                };
                /** @description No such resource, or an org the caller is not a member of. */
                404: {
                    headers: {
                        [name: string]: unknown;
                    };
                    content: {
                        "application/problem+json": components["schemas"]["Problem"];
                    };
                };
                /** @description Rate limited; see Retry-After and RateLimit-*. */
                429: {
                    headers: {
                        [name: string]: unknown;
                    };
                    content: {
                        "application/problem+json": components["schemas"]["Problem"];
                    };
                };
                /** @description An error, as RFC 9457 problem+json. */
                default: {
                    headers: {
                        [name: string]: unknown;
                    };
                    content: {
                        "application/problem+json": components["schemas"]["Problem"];
                    };
                };
            };
        };
        /** Sets the integration's client id, secret and redirect URI. */
        put: {
            parameters: {
                query?: never;
                header?: never;
                path: {
                    org_id: string;
                    provider: string;
                };
                cookie?: never;
            };
            requestBody: {
                content: {
                    "application/json": components["schemas"]["PutCredentials"];
                };
            };
            responses: {
                200: {
                    headers: {
                        [name: string]: unknown;
                    };
                    content: {
                        "application/json": components["schemas"]["CredentialsView"];
                    };
                };
                /** @description No valid bearer token. */
                401: {
                    headers: {
                        [name: string]: unknown;
                    };
                    content: {
                        "application/problem+json": components["schemas"]["Problem"];
                    };
                };
                /** @description No such resource, or an org the caller is not a member of. */
                404: {
                    headers: {
                        [name: string]: unknown;
                    };
                    content: {
                        "application/problem+json": components["schemas"]["Problem"];
                    };
                };
                /** @description Rate limited; see Retry-After and RateLimit-*. */
                429: {
                    headers: {
                        [name: string]: unknown;
                    };
                    content: {
                        "application/problem+json": components["schemas"]["Problem"];
                    };
                };
                /** @description An error, as RFC 9457 problem+json. */
                default: {
                    headers: {
                        [name: string]: unknown;
                    };
                    content: {
                        "application/problem+json": components["schemas"]["Problem"];
                    };
                };
            };
        };
        post?: never;
        /** Removes the integration's credentials. */
        delete: {
            parameters: {
                query?: never;
                header?: never;
                path: {
                    org_id: string;
                    provider: string;
                };
                cookie?: never;
            };
            requestBody?: never;
            responses: {
                204: {
                    headers: {
                        [name: string]: unknown;
                    };
                    content?: never;
                };
                /** @description No valid bearer token. */
                401: {
                    headers: {
                        [name: string]: unknown;
                    };
                    content: {
                        "application/problem+json": components["schemas"]["Problem"];
                    };
                };
                /** @description No such resource, or an org the caller is not a member of. */
                404: {
                    headers: {
                        [name: string]: unknown;
                    };
                    content: {
                        "application/problem+json": components["schemas"]["Problem"];
                    };
                };
                /** @description Rate limited; see Retry-After and RateLimit-*. */
                429: {
                    headers: {
                        [name: string]: unknown;
                    };
                    content: {
                        "application/problem+json": components["schemas"]["Problem"];
                    };
                };
                /** @description An error, as RFC 9457 problem+json. */
                default: {
                    headers: {
                        [name: string]: unknown;
                    };
                    content: {
                        "application/problem+json": components["schemas"]["Problem"];
                    };
                };
            };
        };
        options?: never;
        head?: never;
        patch?: never;
        trace?: never;
    };
    "/v1/orgs/{org_id}/crm/status": {
        parameters: {
            query?: never;
            header?: never;
            path?: never;
            cookie?: never;
        };
        /** Whether the org's CRM integration is set up, and how its sync is doing. */
        get: {
            parameters: {
                query?: {
                    provider?: string;
                    limit?: number;
                    cursor?: string;
                };
                header?: never;
                path: {
                    org_id: string;
                };
                cookie?: never;
            };
            requestBody?: never;
            responses: {
                200: {
                    headers: {
                        [name: string]: unknown;
                    };
                    content: {
                        "application/json": components["schemas"]["CrmStatus"];
                    };
                };
                /** @description No valid bearer token. */
                401: {
                    headers: {
                        [name: string]: unknown;
                    };
                    content: {
                        "application/problem+json": components["schemas"]["Problem"];
                    };
                };
                /** @description No such resource, or an org the caller is not a member of. */
                404: {
                    headers: {
                        [name: string]: unknown;
                    };
                    content: {
                        "application/problem+json": components["schemas"]["Problem"];
                    };
                };
                /** @description Rate limited; see Retry-After and RateLimit-*. */
                429: {
                    headers: {
                        [name: string]: unknown;
                    };
                    content: {
                        "application/problem+json": components["schemas"]["Problem"];
                    };
                };
                /** @description An error, as RFC 9457 problem+json. */
                default: {
                    headers: {
                        [name: string]: unknown;
                    };
                    content: {
                        "application/problem+json": components["schemas"]["Problem"];
                    };
                };
            };
        };
        put?: never;
        post?: never;
        delete?: never;
        options?: never;
        head?: never;
        patch?: never;
        trace?: never;
    };
    "/v1/orgs/{org_id}/events": {
        parameters: {
            query?: never;
            header?: never;
            path?: never;
            cookie?: never;
        };
        /**
         * The org's changes as they happen: server-sent events with `id:` on every event.
         *     Reconnect with `Last-Event-ID` (the last `id:` received) to get what was missed, kept
         *     for at least `EVENTS_RETENTION_SECS` (5 minutes by default); an older or unknown id
         *     gets a `reset` event first, then what is kept: refetch what you show. A comment line
         *     (`: keep-alive`) comes every `EVENTS_HEARTBEAT_SECS`. The stream ends when the access
         *     token expires and when the server restarts (reconnect with a fresh token). At most
         *     `EVENTS_MAX_STREAMS_PER_USER` streams per user are open at once (429 beyond).
         */
        get: {
            parameters: {
                query?: never;
                header?: {
                    /** @description The `id` of the last event received, to resume after it */
                    "Last-Event-ID"?: string | null;
                };
                path: {
                    org_id: string;
                };
                cookie?: never;
            };
            requestBody?: never;
            responses: {
                /** @description Server-sent events; each has `id:`, `event:` (the kind) and `data:` (JSON of the kind's schema) */
                200: {
                    headers: {
                        [name: string]: unknown;
                    };
                    content: {
                        "text/event-stream": components["schemas"]["LiveEvent"];
                    };
                };
                /** @description `Last-Event-ID` is not an id this API sent */
                400: {
                    headers: {
                        [name: string]: unknown;
                    };
                    content: {
                        "application/problem+json": components["schemas"]["Problem"];
                    };
                };
                /** @description No valid bearer token. */
                401: {
                    headers: {
                        [name: string]: unknown;
                    };
                    content: {
                        "application/problem+json": components["schemas"]["Problem"];
                    };
                };
                /** @description No such resource, or an org the caller is not a member of. */
                404: {
                    headers: {
                        [name: string]: unknown;
                    };
                    content: {
                        "application/problem+json": components["schemas"]["Problem"];
                    };
                };
                /** @description Too many streams open for this user; see Retry-After */
                429: {
                    headers: {
                        [name: string]: unknown;
                    };
                    content: {
                        "application/problem+json": components["schemas"]["Problem"];
                    };
                };
                /** @description Live events are unavailable (Redis); retry shortly */
                503: {
                    headers: {
                        [name: string]: unknown;
                    };
                    content: {
                        "application/problem+json": components["schemas"]["Problem"];
                    };
                };
                /** @description An error, as RFC 9457 problem+json. */
                default: {
                    headers: {
                        [name: string]: unknown;
                    };
                    content: {
                        "application/problem+json": components["schemas"]["Problem"];
                    };
                };
            };
        };
        put?: never;
        post?: never;
        delete?: never;
        options?: never;
        head?: never;
        patch?: never;
        trace?: never;
    };
    "/v1/orgs/{org_id}/jobs": {
        parameters: {
            query?: never;
            header?: never;
            path?: never;
            cookie?: never;
        };
        /** The org's jobs, newest first. */
        get: {
            parameters: {
                query?: {
                    status?: components["schemas"]["JobStatus"];
                    type?: string;
                    /** @description 1..=100, default 25. */
                    limit?: number;
                    cursor?: string;
                };
                header?: never;
                path: {
                    org_id: string;
                };
                cookie?: never;
            };
            requestBody?: never;
            responses: {
                200: {
                    headers: {
                        [name: string]: unknown;
                    };
                    content: {
                        "application/json": {
                            data: {
                                /** Format: int32 */
                                attempts: number;
                                /** Format: date-time */
                                created_at: string;
                                error?: string | null;
                                /** Format: date-time */
                                finished_at?: string | null;
                                /** Format: uuid */
                                id: string;
                                /** Format: int32 */
                                max_attempts: number;
                                /** Format: uuid */
                                org_id: string;
                                payload: Record<string, unknown>;
                                result?: Record<string, unknown> | null;
                                /**
                                 * Format: date-time
                                 * @description When a job waiting for its next attempt becomes due.
                                 */
                                run_after?: string | null;
                                /** Format: date-time */
                                started_at?: string | null;
                                status: components["schemas"]["JobStatus"];
                                type: string;
                            }[];
                            next_cursor?: string | null;
                        };
                    };
                };
                /** @description No valid bearer token. */
                401: {
                    headers: {
                        [name: string]: unknown;
                    };
                    content: {
                        "application/problem+json": components["schemas"]["Problem"];
                    };
                };
                /** @description No such resource, or an org the caller is not a member of. */
                404: {
                    headers: {
                        [name: string]: unknown;
                    };
                    content: {
                        "application/problem+json": components["schemas"]["Problem"];
                    };
                };
                /** @description Rate limited; see Retry-After and RateLimit-*. */
                429: {
                    headers: {
                        [name: string]: unknown;
                    };
                    content: {
                        "application/problem+json": components["schemas"]["Problem"];
                    };
                };
                /** @description An error, as RFC 9457 problem+json. */
                default: {
                    headers: {
                        [name: string]: unknown;
                    };
                    content: {
                        "application/problem+json": components["schemas"]["Problem"];
                    };
                };
            };
        };
        put?: never;
        /** Queues a job; 202 with the job as recorded. */
        post: {
            parameters: {
                query?: never;
                header?: never;
                path: {
                    org_id: string;
                };
                cookie?: never;
            };
            requestBody: {
                content: {
                    "application/json": components["schemas"]["CreateJob"];
                };
            };
            responses: {
                202: {
                    headers: {
                        [name: string]: unknown;
                    };
                    content: {
                        "application/json": components["schemas"]["Job"];
                    };
                };
                /** @description No valid bearer token. */
                401: {
                    headers: {
                        [name: string]: unknown;
                    };
                    content: {
                        "application/problem+json": components["schemas"]["Problem"];
                    };
                };
                /** @description No such resource, or an org the caller is not a member of. */
                404: {
                    headers: {
                        [name: string]: unknown;
                    };
                    content: {
                        "application/problem+json": components["schemas"]["Problem"];
                    };
                };
                /** @description Rate limited; see Retry-After and RateLimit-*. */
                429: {
                    headers: {
                        [name: string]: unknown;
                    };
                    content: {
                        "application/problem+json": components["schemas"]["Problem"];
                    };
                };
                /** @description An error, as RFC 9457 problem+json. */
                default: {
                    headers: {
                        [name: string]: unknown;
                    };
                    content: {
                        "application/problem+json": components["schemas"]["Problem"];
                    };
                };
            };
        };
        delete?: never;
        options?: never;
        head?: never;
        patch?: never;
        trace?: never;
    };
    "/v1/orgs/{org_id}/jobs/{job_id}": {
        parameters: {
            query?: never;
            header?: never;
            path?: never;
            cookie?: never;
        };
        /** One job: status, attempts, result or error. */
        get: {
            parameters: {
                query?: never;
                header?: never;
                path: {
                    org_id: string;
                    job_id: string;
                };
                cookie?: never;
            };
            requestBody?: never;
            responses: {
                200: {
                    headers: {
                        [name: string]: unknown;
                    };
                    content: {
                        "application/json": components["schemas"]["Job"];
                    };
                };
                /** @description No valid bearer token. */
                401: {
                    headers: {
                        [name: string]: unknown;
                    };
                    content: {
                        "application/problem+json": components["schemas"]["Problem"];
                    };
                };
                /** @description No such resource, or an org the caller is not a member of. */
                404: {
                    headers: {
                        [name: string]: unknown;
                    };
                    content: {
                        "application/problem+json": components["schemas"]["Problem"];
                    };
                };
                /** @description Rate limited; see Retry-After and RateLimit-*. */
                429: {
                    headers: {
                        [name: string]: unknown;
                    };
                    content: {
                        "application/problem+json": components["schemas"]["Problem"];
                    };
                };
                /** @description An error, as RFC 9457 problem+json. */
                default: {
                    headers: {
                        [name: string]: unknown;
                    };
                    content: {
                        "application/problem+json": components["schemas"]["Problem"];
                    };
                };
            };
        };
        put?: never;
        post?: never;
        delete?: never;
        options?: never;
        head?: never;
        patch?: never;
        trace?: never;
    };
    "/v1/orgs/{org_id}/jobs/{job_id}/cancel": {
        parameters: {
            query?: never;
            header?: never;
            path?: never;
            cookie?: never;
        };
        get?: never;
        put?: never;
        /** queued → cancelled (it will never run); 409 in any other state. */
        post: {
            parameters: {
                query?: never;
                header?: never;
                path: {
                    org_id: string;
                    job_id: string;
                };
                cookie?: never;
            };
            requestBody?: never;
            responses: {
                200: {
                    headers: {
                        [name: string]: unknown;
                    };
                    content: {
                        "application/json": components["schemas"]["Job"];
                    };
                };
                /** @description No valid bearer token. */
                401: {
                    headers: {
                        [name: string]: unknown;
                    };
                    content: {
                        "application/problem+json": components["schemas"]["Problem"];
                    };
                };
                /** @description No such resource, or an org the caller is not a member of. */
                404: {
                    headers: {
                        [name: string]: unknown;
                    };
                    content: {
                        "application/problem+json": components["schemas"]["Problem"];
                    };
                };
                /** @description Rate limited; see Retry-After and RateLimit-*. */
                429: {
                    headers: {
                        [name: string]: unknown;
                    };
                    content: {
                        "application/problem+json": components["schemas"]["Problem"];
                    };
                };
                /** @description An error, as RFC 9457 problem+json. */
                default: {
                    headers: {
                        [name: string]: unknown;
                    };
                    content: {
                        "application/problem+json": components["schemas"]["Problem"];
                    };
                };
            };
        };
        delete?: never;
        options?: never;
        head?: never;
        patch?: never;
        trace?: never;
    };
    "/v1/orgs/{org_id}/jobs/{job_id}/retry": {
        parameters: {
            query?: never;
            header?: never;
            path?: never;
            cookie?: never;
        };
        get?: never;
        put?: never;
        /** failed → queued with a fresh set of attempts; 409 in any other state. */
        post: {
            parameters: {
                query?: never;
                header?: never;
                path: {
                    org_id: string;
                    job_id: string;
                };
                cookie?: never;
            };
            requestBody?: never;
            responses: {
                202: {
                    headers: {
                        [name: string]: unknown;
                    };
                    content: {
                        "application/json": components["schemas"]["Job"];
                    };
                };
                /** @description No valid bearer token. */
                401: {
                    headers: {
                        [name: string]: unknown;
                    };
                    content: {
                        "application/problem+json": components["schemas"]["Problem"];
                    };
                };
                /** @description No such resource, or an org the caller is not a member of. */
                404: {
                    headers: {
                        [name: string]: unknown;
                    };
                    content: {
                        "application/problem+json": components["schemas"]["Problem"];
                    };
                };
                /** @description Rate limited; see Retry-After and RateLimit-*. */
                429: {
                    headers: {
                        [name: string]: unknown;
                    };
                    content: {
                        "application/problem+json": components["schemas"]["Problem"];
                    };
                };
                /** @description An error, as RFC 9457 problem+json. */
                default: {
                    headers: {
                        [name: string]: unknown;
                    };
                    content: {
                        "application/problem+json": components["schemas"]["Problem"];
                    };
                };
            };
        };
        delete?: never;
        options?: never;
        head?: never;
        patch?: never;
        trace?: never;
    };
    "/v1/orgs/{org_id}/knowledge/assets": {
        parameters: {
            query?: never;
            header?: never;
            path?: never;
            cookie?: never;
        };
        /** The org's files, newest first, with their indexing progress. */
        get: {
            parameters: {
                query?: {
                    agent_id?: string;
                    status?: components["schemas"]["AssetStatus"];
                    /** @description 1..=100, default 25. */
                    limit?: number;
                    cursor?: string;
                };
                header?: never;
                path: {
                    org_id: string;
                };
                cookie?: never;
            };
            requestBody?: never;
            responses: {
                200: {
                    headers: {
                        [name: string]: unknown;
                    };
                    content: {
                        "application/json": {
                            data: {
                                /**
                                 * Format: uuid
                                 * @description The agent it is for; org-wide when absent.
                                 */
                                agent_id?: string | null;
                                /** Format: int32 */
                                chunks_count: number;
                                content_type: string;
                                /** Format: date-time */
                                created_at: string;
                                /** @description Whether its chunks carry embeddings (vector search), or only full text. */
                                embedded: boolean;
                                /** @description Why processing failed, readable. */
                                error?: string | null;
                                filename: string;
                                format: components["schemas"]["AssetFormat"];
                                /** Format: uuid */
                                id: string;
                                /** Format: uuid */
                                org_id: string;
                                /**
                                 * @description `{stage, done, total}`: stage is one of queued, extracting, chunking, embedding,
                                 *     writing, indexed, failed; done/total count chunks.
                                 */
                                progress: Record<string, unknown>;
                                /** @description Hex SHA-256 of the bytes; the same bytes twice in an org are one asset. */
                                sha256: string;
                                /** Format: int64 */
                                size_bytes: number;
                                status: components["schemas"]["AssetStatus"];
                                /** Format: date-time */
                                updated_at: string;
                            }[];
                            next_cursor?: string | null;
                        };
                    };
                };
                /** @description No valid bearer token. */
                401: {
                    headers: {
                        [name: string]: unknown;
                    };
                    content: {
                        "application/problem+json": components["schemas"]["Problem"];
                    };
                };
                /** @description No such resource, or an org the caller is not a member of. */
                404: {
                    headers: {
                        [name: string]: unknown;
                    };
                    content: {
                        "application/problem+json": components["schemas"]["Problem"];
                    };
                };
                /** @description Rate limited; see Retry-After and RateLimit-*. */
                429: {
                    headers: {
                        [name: string]: unknown;
                    };
                    content: {
                        "application/problem+json": components["schemas"]["Problem"];
                    };
                };
                /** @description An error, as RFC 9457 problem+json. */
                default: {
                    headers: {
                        [name: string]: unknown;
                    };
                    content: {
                        "application/problem+json": components["schemas"]["Problem"];
                    };
                };
            };
        };
        put?: never;
        /**
         * Uploads a file (text, Markdown, HTML, PDF or DOCX, judged by its content) and queues
         *     its indexing: 202. The same bytes again in the org: 200 with the existing asset.
         */
        post: {
            parameters: {
                query?: never;
                header?: never;
                path: {
                    org_id: string;
                };
                cookie?: never;
            };
            requestBody: {
                content: {
                    "multipart/form-data": components["schemas"]["UploadForm"];
                };
            };
            responses: {
                /** @description The same bytes are already an asset */
                200: {
                    headers: {
                        [name: string]: unknown;
                    };
                    content: {
                        "application/json": components["schemas"]["Uploaded"];
                    };
                };
                /** @description Stored; indexing queued */
                202: {
                    headers: {
                        [name: string]: unknown;
                    };
                    content: {
                        "application/json": components["schemas"]["Uploaded"];
                    };
                };
                /** @description No valid bearer token. */
                401: {
                    headers: {
                        [name: string]: unknown;
                    };
                    content: {
                        "application/problem+json": components["schemas"]["Problem"];
                    };
                };
                /** @description No such resource, or an org the caller is not a member of. */
                404: {
                    headers: {
                        [name: string]: unknown;
                    };
                    content: {
                        "application/problem+json": components["schemas"]["Problem"];
                    };
                };
                /** @description Larger than ASSET_MAX_BYTES */
                413: {
                    headers: {
                        [name: string]: unknown;
                    };
                    content: {
                        "application/problem+json": components["schemas"]["Problem"];
                    };
                };
                /** @description Not text, Markdown, HTML, PDF or DOCX */
                415: {
                    headers: {
                        [name: string]: unknown;
                    };
                    content: {
                        "application/problem+json": components["schemas"]["Problem"];
                    };
                };
                /** @description Rate limited; see Retry-After and RateLimit-*. */
                429: {
                    headers: {
                        [name: string]: unknown;
                    };
                    content: {
                        "application/problem+json": components["schemas"]["Problem"];
                    };
                };
                /** @description An error, as RFC 9457 problem+json. */
                default: {
                    headers: {
                        [name: string]: unknown;
                    };
                    content: {
                        "application/problem+json": components["schemas"]["Problem"];
                    };
                };
            };
        };
        delete?: never;
        options?: never;
        head?: never;
        patch?: never;
        trace?: never;
    };
    "/v1/orgs/{org_id}/knowledge/assets/{asset_id}": {
        parameters: {
            query?: never;
            header?: never;
            path?: never;
            cookie?: never;
        };
        /** One file, with `progress`. */
        get: {
            parameters: {
                query?: never;
                header?: never;
                path: {
                    org_id: string;
                    asset_id: string;
                };
                cookie?: never;
            };
            requestBody?: never;
            responses: {
                200: {
                    headers: {
                        [name: string]: unknown;
                    };
                    content: {
                        "application/json": components["schemas"]["Asset"];
                    };
                };
                /** @description No valid bearer token. */
                401: {
                    headers: {
                        [name: string]: unknown;
                    };
                    content: {
                        "application/problem+json": components["schemas"]["Problem"];
                    };
                };
                /** @description No such resource, or an org the caller is not a member of. */
                404: {
                    headers: {
                        [name: string]: unknown;
                    };
                    content: {
                        "application/problem+json": components["schemas"]["Problem"];
                    };
                };
                /** @description Rate limited; see Retry-After and RateLimit-*. */
                429: {
                    headers: {
                        [name: string]: unknown;
                    };
                    content: {
                        "application/problem+json": components["schemas"]["Problem"];
                    };
                };
                /** @description An error, as RFC 9457 problem+json. */
                default: {
                    headers: {
                        [name: string]: unknown;
                    };
                    content: {
                        "application/problem+json": components["schemas"]["Problem"];
                    };
                };
            };
        };
        put?: never;
        post?: never;
        /** Deletes a file with its bytes, chunks and the graph facts only it supported. */
        delete: {
            parameters: {
                query?: never;
                header?: never;
                path: {
                    org_id: string;
                    asset_id: string;
                };
                cookie?: never;
            };
            requestBody?: never;
            responses: {
                /** @description Deleted */
                204: {
                    headers: {
                        [name: string]: unknown;
                    };
                    content?: never;
                };
                /** @description No valid bearer token. */
                401: {
                    headers: {
                        [name: string]: unknown;
                    };
                    content: {
                        "application/problem+json": components["schemas"]["Problem"];
                    };
                };
                /** @description No such resource, or an org the caller is not a member of. */
                404: {
                    headers: {
                        [name: string]: unknown;
                    };
                    content: {
                        "application/problem+json": components["schemas"]["Problem"];
                    };
                };
                /** @description Rate limited; see Retry-After and RateLimit-*. */
                429: {
                    headers: {
                        [name: string]: unknown;
                    };
                    content: {
                        "application/problem+json": components["schemas"]["Problem"];
                    };
                };
                /** @description An error, as RFC 9457 problem+json. */
                default: {
                    headers: {
                        [name: string]: unknown;
                    };
                    content: {
                        "application/problem+json": components["schemas"]["Problem"];
                    };
                };
            };
        };
        options?: never;
        head?: never;
        patch?: never;
        trace?: never;
    };
    "/v1/orgs/{org_id}/knowledge/assets/{asset_id}/chunks": {
        parameters: {
            query?: never;
            header?: never;
            path?: never;
            cookie?: never;
        };
        /** The file's chunks in order (the chunk preview). */
        get: {
            parameters: {
                query?: {
                    /** @description 1..=100, default 25. */
                    limit?: number;
                    cursor?: string;
                };
                header?: never;
                path: {
                    org_id: string;
                    asset_id: string;
                };
                cookie?: never;
            };
            requestBody?: never;
            responses: {
                200: {
                    headers: {
                        [name: string]: unknown;
                    };
                    content: {
                        "application/json": {
                            data: {
                                content: string;
                                /** Format: uuid */
                                id: string;
                                /** @description `page` (PDF), `page_end` when it spans pages, `heading`. */
                                metadata: Record<string, unknown>;
                                /** Format: int32 */
                                position: number;
                                /** Format: int32 */
                                token_count: number;
                            }[];
                            next_cursor?: string | null;
                        };
                    };
                };
                /** @description No valid bearer token. */
                401: {
                    headers: {
                        [name: string]: unknown;
                    };
                    content: {
                        "application/problem+json": components["schemas"]["Problem"];
                    };
                };
                /** @description No such resource, or an org the caller is not a member of. */
                404: {
                    headers: {
                        [name: string]: unknown;
                    };
                    content: {
                        "application/problem+json": components["schemas"]["Problem"];
                    };
                };
                /** @description Rate limited; see Retry-After and RateLimit-*. */
                429: {
                    headers: {
                        [name: string]: unknown;
                    };
                    content: {
                        "application/problem+json": components["schemas"]["Problem"];
                    };
                };
                /** @description An error, as RFC 9457 problem+json. */
                default: {
                    headers: {
                        [name: string]: unknown;
                    };
                    content: {
                        "application/problem+json": components["schemas"]["Problem"];
                    };
                };
            };
        };
        put?: never;
        post?: never;
        delete?: never;
        options?: never;
        head?: never;
        patch?: never;
        trace?: never;
    };
    "/v1/orgs/{org_id}/knowledge/assets/{asset_id}/reprocess": {
        parameters: {
            query?: never;
            header?: never;
            path?: never;
            cookie?: never;
        };
        get?: never;
        put?: never;
        /**
         * Indexes the file again (202); its current chunks stay searchable until the new ones
         *     replace them. 409 while it is queued or processing.
         */
        post: {
            parameters: {
                query?: never;
                header?: never;
                path: {
                    org_id: string;
                    asset_id: string;
                };
                cookie?: never;
            };
            requestBody?: never;
            responses: {
                202: {
                    headers: {
                        [name: string]: unknown;
                    };
                    content: {
                        "application/json": components["schemas"]["Job"];
                    };
                };
                /** @description No valid bearer token. */
                401: {
                    headers: {
                        [name: string]: unknown;
                    };
                    content: {
                        "application/problem+json": components["schemas"]["Problem"];
                    };
                };
                /** @description No such resource, or an org the caller is not a member of. */
                404: {
                    headers: {
                        [name: string]: unknown;
                    };
                    content: {
                        "application/problem+json": components["schemas"]["Problem"];
                    };
                };
                /** @description Rate limited; see Retry-After and RateLimit-*. */
                429: {
                    headers: {
                        [name: string]: unknown;
                    };
                    content: {
                        "application/problem+json": components["schemas"]["Problem"];
                    };
                };
                /** @description An error, as RFC 9457 problem+json. */
                default: {
                    headers: {
                        [name: string]: unknown;
                    };
                    content: {
                        "application/problem+json": components["schemas"]["Problem"];
                    };
                };
            };
        };
        delete?: never;
        options?: never;
        head?: never;
        patch?: never;
        trace?: never;
    };
    "/v1/orgs/{org_id}/knowledge/entities": {
        parameters: {
            query?: never;
            header?: never;
            path?: never;
            cookie?: never;
        };
        /** The org's entities, newest first. */
        get: {
            parameters: {
                query?: {
                    /** @description A part of the name, in any case, spacing or punctuation (at most 200 characters). */
                    q?: string;
                    type?: components["schemas"]["EntityType"];
                    /** @description 1..=100, default 25. */
                    limit?: number;
                    cursor?: string;
                };
                header?: never;
                path: {
                    org_id: string;
                };
                cookie?: never;
            };
            requestBody?: never;
            responses: {
                200: {
                    headers: {
                        [name: string]: unknown;
                    };
                    content: {
                        "application/json": {
                            data: {
                                /** Format: date-time */
                                created_at: string;
                                description: string;
                                /** Format: uuid */
                                id: string;
                                /** @description As first written in the org's files. */
                                name: string;
                                /** @description What mentions are merged by: lower case, whitespace collapsed, punctuation trimmed. */
                                normalized_name: string;
                                type: components["schemas"]["EntityType"];
                                /** Format: date-time */
                                updated_at: string;
                            }[];
                            next_cursor?: string | null;
                        };
                    };
                };
                /** @description No valid bearer token. */
                401: {
                    headers: {
                        [name: string]: unknown;
                    };
                    content: {
                        "application/problem+json": components["schemas"]["Problem"];
                    };
                };
                /** @description No such resource, or an org the caller is not a member of. */
                404: {
                    headers: {
                        [name: string]: unknown;
                    };
                    content: {
                        "application/problem+json": components["schemas"]["Problem"];
                    };
                };
                /** @description Rate limited; see Retry-After and RateLimit-*. */
                429: {
                    headers: {
                        [name: string]: unknown;
                    };
                    content: {
                        "application/problem+json": components["schemas"]["Problem"];
                    };
                };
                /** @description An error, as RFC 9457 problem+json. */
                default: {
                    headers: {
                        [name: string]: unknown;
                    };
                    content: {
                        "application/problem+json": components["schemas"]["Problem"];
                    };
                };
            };
        };
        put?: never;
        post?: never;
        delete?: never;
        options?: never;
        head?: never;
        patch?: never;
        trace?: never;
    };
    "/v1/orgs/{org_id}/knowledge/entities/{entity_id}": {
        parameters: {
            query?: never;
            header?: never;
            path?: never;
            cookie?: never;
        };
        /** One entity, with its relationships and source chunks. */
        get: {
            parameters: {
                query?: never;
                header?: never;
                path: {
                    org_id: string;
                    entity_id: string;
                };
                cookie?: never;
            };
            requestBody?: never;
            responses: {
                200: {
                    headers: {
                        [name: string]: unknown;
                    };
                    content: {
                        "application/json": components["schemas"]["EntityDetail"];
                    };
                };
                /** @description No valid bearer token. */
                401: {
                    headers: {
                        [name: string]: unknown;
                    };
                    content: {
                        "application/problem+json": components["schemas"]["Problem"];
                    };
                };
                /** @description No such resource, or an org the caller is not a member of. */
                404: {
                    headers: {
                        [name: string]: unknown;
                    };
                    content: {
                        "application/problem+json": components["schemas"]["Problem"];
                    };
                };
                /** @description Rate limited; see Retry-After and RateLimit-*. */
                429: {
                    headers: {
                        [name: string]: unknown;
                    };
                    content: {
                        "application/problem+json": components["schemas"]["Problem"];
                    };
                };
                /** @description An error, as RFC 9457 problem+json. */
                default: {
                    headers: {
                        [name: string]: unknown;
                    };
                    content: {
                        "application/problem+json": components["schemas"]["Problem"];
                    };
                };
            };
        };
        put?: never;
        post?: never;
        delete?: never;
        options?: never;
        head?: never;
        patch?: never;
        trace?: never;
    };
    "/v1/orgs/{org_id}/knowledge/search": {
        parameters: {
            query?: never;
            header?: never;
            path?: never;
            cookie?: never;
        };
        get?: never;
        put?: never;
        /** Searches the org's indexed chunks, best first. */
        post: {
            parameters: {
                query?: never;
                header?: never;
                path: {
                    org_id: string;
                };
                cookie?: never;
            };
            requestBody: {
                content: {
                    "application/json": components["schemas"]["SearchRequest"];
                };
            };
            responses: {
                200: {
                    headers: {
                        [name: string]: unknown;
                    };
                    content: {
                        "application/json": components["schemas"]["SearchResults"];
                    };
                };
                /** @description No valid bearer token. */
                401: {
                    headers: {
                        [name: string]: unknown;
                    };
                    content: {
                        "application/problem+json": components["schemas"]["Problem"];
                    };
                };
                /** @description No such resource, or an org the caller is not a member of. */
                404: {
                    headers: {
                        [name: string]: unknown;
                    };
                    content: {
                        "application/problem+json": components["schemas"]["Problem"];
                    };
                };
                /** @description Vector search asked for where there are no embeddings, pgvector or provider */
                409: {
                    headers: {
                        [name: string]: unknown;
                    };
                    content: {
                        "application/problem+json": components["schemas"]["Problem"];
                    };
                };
                /** @description Rate limited; see Retry-After and RateLimit-*. */
                429: {
                    headers: {
                        [name: string]: unknown;
                    };
                    content: {
                        "application/problem+json": components["schemas"]["Problem"];
                    };
                };
                /** @description An error, as RFC 9457 problem+json. */
                default: {
                    headers: {
                        [name: string]: unknown;
                    };
                    content: {
                        "application/problem+json": components["schemas"]["Problem"];
                    };
                };
            };
        };
        delete?: never;
        options?: never;
        head?: never;
        patch?: never;
        trace?: never;
    };
    "/v1/orgs/{org_id}/kommo/messages": {
        parameters: {
            query?: never;
            header?: never;
            path?: never;
            cookie?: never;
        };
        get?: never;
        put?: never;
        /** Queues a message to a deal: a note in Kommo (`common` for chat, `outgoing_email`). */
        post: {
            parameters: {
                query?: never;
                header?: never;
                path: {
                    org_id: string;
                };
                cookie?: never;
            };
            requestBody: {
                content: {
                    "application/json": components["schemas"]["SendMessage"];
                };
            };
            responses: {
                202: {
                    headers: {
                        [name: string]: unknown;
                    };
                    content: {
                        "application/json": components["schemas"]["Job"];
                    };
                };
                /** @description No valid bearer token. */
                401: {
                    headers: {
                        [name: string]: unknown;
                    };
                    content: {
                        "application/problem+json": components["schemas"]["Problem"];
                    };
                };
                /** @description No such resource, or an org the caller is not a member of. */
                404: {
                    headers: {
                        [name: string]: unknown;
                    };
                    content: {
                        "application/problem+json": components["schemas"]["Problem"];
                    };
                };
                /** @description Rate limited; see Retry-After and RateLimit-*. */
                429: {
                    headers: {
                        [name: string]: unknown;
                    };
                    content: {
                        "application/problem+json": components["schemas"]["Problem"];
                    };
                };
                /** @description An error, as RFC 9457 problem+json. */
                default: {
                    headers: {
                        [name: string]: unknown;
                    };
                    content: {
                        "application/problem+json": components["schemas"]["Problem"];
                    };
                };
            };
        };
        delete?: never;
        options?: never;
        head?: never;
        patch?: never;
        trace?: never;
    };
    "/v1/orgs/{org_id}/kommo/oauth/start": {
        parameters: {
            query?: never;
            header?: never;
            path?: never;
            cookie?: never;
        };
        get?: never;
        put?: never;
        /** Starts connecting a Kommo account: where to send the user, and the one-time state. */
        post: {
            parameters: {
                query?: never;
                header?: never;
                path: {
                    org_id: string;
                };
                cookie?: never;
            };
            requestBody: {
                content: {
                    "application/json": components["schemas"]["StartOauth"];
                };
            };
            responses: {
                200: {
                    headers: {
                        [name: string]: unknown;
                    };
                    content: {
                        "application/json": components["schemas"]["OauthStarted"];
                    };
                };
                /** @description No valid bearer token. */
                401: {
                    headers: {
                        [name: string]: unknown;
                    };
                    content: {
                        "application/problem+json": components["schemas"]["Problem"];
                    };
                };
                /** @description No such resource, or an org the caller is not a member of. */
                404: {
                    headers: {
                        [name: string]: unknown;
                    };
                    content: {
                        "application/problem+json": components["schemas"]["Problem"];
                    };
                };
                /** @description Rate limited; see Retry-After and RateLimit-*. */
                429: {
                    headers: {
                        [name: string]: unknown;
                    };
                    content: {
                        "application/problem+json": components["schemas"]["Problem"];
                    };
                };
                /** @description An error, as RFC 9457 problem+json. */
                default: {
                    headers: {
                        [name: string]: unknown;
                    };
                    content: {
                        "application/problem+json": components["schemas"]["Problem"];
                    };
                };
            };
        };
        delete?: never;
        options?: never;
        head?: never;
        patch?: never;
        trace?: never;
    };
    "/v1/orgs/{org_id}/members": {
        parameters: {
            query?: never;
            header?: never;
            path?: never;
            cookie?: never;
        };
        /** The org's members. */
        get: {
            parameters: {
                query?: {
                    /** @description 1..=100, default 25. */
                    limit?: number;
                    cursor?: string;
                };
                header?: never;
                path: {
                    org_id: string;
                };
                cookie?: never;
            };
            requestBody?: never;
            responses: {
                200: {
                    headers: {
                        [name: string]: unknown;
                    };
                    content: {
                        "application/json": {
                            data: {
                                /** Format: date-time */
                                created_at: string;
                                role: components["schemas"]["Role"];
                                /** Format: date-time */
                                updated_at: string;
                                /** Format: uuid */
                                user_id: string;
                            }[];
                            next_cursor?: string | null;
                        };
                    };
                };
                /** @description No valid bearer token. */
                401: {
                    headers: {
                        [name: string]: unknown;
                    };
                    content: {
                        "application/problem+json": components["schemas"]["Problem"];
                    };
                };
                /** @description No such resource, or an org the caller is not a member of. */
                404: {
                    headers: {
                        [name: string]: unknown;
                    };
                    content: {
                        "application/problem+json": components["schemas"]["Problem"];
                    };
                };
                /** @description Rate limited; see Retry-After and RateLimit-*. */
                429: {
                    headers: {
                        [name: string]: unknown;
                    };
                    content: {
                        "application/problem+json": components["schemas"]["Problem"];
                    };
                };
                /** @description An error, as RFC 9457 problem+json. */
                default: {
                    headers: {
                        [name: string]: unknown;
                    };
                    content: {
                        "application/problem+json": components["schemas"]["Problem"];
                    };
                };
            };
        };
        put?: never;
        post?: never;
        delete?: never;
        options?: never;
        head?: never;
        patch?: never;
        trace?: never;
    };
    "/v1/orgs/{org_id}/members/{user_id}": {
        parameters: {
            query?: never;
            header?: never;
            path?: never;
            cookie?: never;
        };
        get?: never;
        /** Adds a member (201) or changes a member's role (200). */
        put: {
            parameters: {
                query?: never;
                header?: never;
                path: {
                    org_id: string;
                    user_id: string;
                };
                cookie?: never;
            };
            requestBody: {
                content: {
                    "application/json": components["schemas"]["PutMember"];
                };
            };
            responses: {
                200: {
                    headers: {
                        [name: string]: unknown;
                    };
                    content: {
                        "application/json": components["schemas"]["Member"];
                    };
                };
                201: {
                    headers: {
                        [name: string]: unknown;
                    };
                    content: {
                        "application/json": components["schemas"]["Member"];
                    };
                };
                /** @description No valid bearer token. */
                401: {
                    headers: {
                        [name: string]: unknown;
                    };
                    content: {
                        "application/problem+json": components["schemas"]["Problem"];
                    };
                };
                /** @description No such resource, or an org the caller is not a member of. */
                404: {
                    headers: {
                        [name: string]: unknown;
                    };
                    content: {
                        "application/problem+json": components["schemas"]["Problem"];
                    };
                };
                /** @description Rate limited; see Retry-After and RateLimit-*. */
                429: {
                    headers: {
                        [name: string]: unknown;
                    };
                    content: {
                        "application/problem+json": components["schemas"]["Problem"];
                    };
                };
                /** @description An error, as RFC 9457 problem+json. */
                default: {
                    headers: {
                        [name: string]: unknown;
                    };
                    content: {
                        "application/problem+json": components["schemas"]["Problem"];
                    };
                };
            };
        };
        post?: never;
        /**
         * Removes a member: owners remove anyone, and every member may leave (remove
         *     themselves). The last owner cannot go (409).
         */
        delete: {
            parameters: {
                query?: never;
                header?: never;
                path: {
                    org_id: string;
                    user_id: string;
                };
                cookie?: never;
            };
            requestBody?: never;
            responses: {
                204: {
                    headers: {
                        [name: string]: unknown;
                    };
                    content?: never;
                };
                /** @description No valid bearer token. */
                401: {
                    headers: {
                        [name: string]: unknown;
                    };
                    content: {
                        "application/problem+json": components["schemas"]["Problem"];
                    };
                };
                /** @description No such resource, or an org the caller is not a member of. */
                404: {
                    headers: {
                        [name: string]: unknown;
                    };
                    content: {
                        "application/problem+json": components["schemas"]["Problem"];
                    };
                };
                /** @description Rate limited; see Retry-After and RateLimit-*. */
                429: {
                    headers: {
                        [name: string]: unknown;
                    };
                    content: {
                        "application/problem+json": components["schemas"]["Problem"];
                    };
                };
                /** @description An error, as RFC 9457 problem+json. */
                default: {
                    headers: {
                        [name: string]: unknown;
                    };
                    content: {
                        "application/problem+json": components["schemas"]["Problem"];
                    };
                };
            };
        };
        options?: never;
        head?: never;
        patch?: never;
        trace?: never;
    };
    "/v1/orgs/{org_id}/usage": {
        parameters: {
            query?: never;
            header?: never;
            path?: never;
            cookie?: never;
        };
        /** Requests and tokens in and out per day and kind (members and up). */
        get: {
            parameters: {
                query?: {
                    /** @description First day (UTC, `YYYY-MM-DD`); default 29 days before `to`. */
                    from?: string;
                    /** @description Last day, included; default today (UTC). */
                    to?: string;
                };
                header?: never;
                path: {
                    org_id: string;
                };
                cookie?: never;
            };
            requestBody?: never;
            responses: {
                200: {
                    headers: {
                        [name: string]: unknown;
                    };
                    content: {
                        "application/json": components["schemas"]["Usage"];
                    };
                };
                /** @description A date is not YYYY-MM-DD */
                400: {
                    headers: {
                        [name: string]: unknown;
                    };
                    content: {
                        "application/problem+json": components["schemas"]["Problem"];
                    };
                };
                /** @description No valid bearer token. */
                401: {
                    headers: {
                        [name: string]: unknown;
                    };
                    content: {
                        "application/problem+json": components["schemas"]["Problem"];
                    };
                };
                /** @description No such resource, or an org the caller is not a member of. */
                404: {
                    headers: {
                        [name: string]: unknown;
                    };
                    content: {
                        "application/problem+json": components["schemas"]["Problem"];
                    };
                };
                /** @description `from` after `to`, or more than 366 days */
                422: {
                    headers: {
                        [name: string]: unknown;
                    };
                    content: {
                        "application/problem+json": components["schemas"]["Problem"];
                    };
                };
                /** @description Rate limited; see Retry-After and RateLimit-*. */
                429: {
                    headers: {
                        [name: string]: unknown;
                    };
                    content: {
                        "application/problem+json": components["schemas"]["Problem"];
                    };
                };
                /** @description An error, as RFC 9457 problem+json. */
                default: {
                    headers: {
                        [name: string]: unknown;
                    };
                    content: {
                        "application/problem+json": components["schemas"]["Problem"];
                    };
                };
            };
        };
        put?: never;
        post?: never;
        delete?: never;
        options?: never;
        head?: never;
        patch?: never;
        trace?: never;
    };
    "/v1/orgs/{org_id}/webhook-events": {
        parameters: {
            query?: never;
            header?: never;
            path?: never;
            cookie?: never;
        };
        /** Webhook events received for the org, newest first. */
        get: {
            parameters: {
                query?: {
                    /** @description `leads`, `contacts`, `messages`, … */
                    type?: string;
                    /** @description `received`, `processed` or `failed`. */
                    status?: string;
                    limit?: number;
                    cursor?: string;
                };
                header?: never;
                path: {
                    org_id: string;
                };
                cookie?: never;
            };
            requestBody?: never;
            responses: {
                200: {
                    headers: {
                        [name: string]: unknown;
                    };
                    content: {
                        "application/json": {
                            data: {
                                /** Format: uuid */
                                connection_id: string;
                                /** Format: uuid */
                                delivery_id?: string | null;
                                /** Format: int64 */
                                entity_id?: number | null;
                                error?: string | null;
                                /** Format: uuid */
                                id: string;
                                /** @description `delivery` (a body that could not be parsed) or `event`. */
                                kind: string;
                                /**
                                 * @description The entity as Kommo sent it: normally an object, but any JSON value a body held.
                                 *     `null` when `payload_truncated`.
                                 */
                                payload: unknown;
                                /**
                                 * @description The stored payload is larger than `LISTED_PAYLOAD_BYTES` (or nested too deep to
                                 *     return), so the list leaves it out.
                                 */
                                payload_truncated: boolean;
                                /** Format: date-time */
                                processed_at?: string | null;
                                /** Format: date-time */
                                received_at: string;
                                status: components["schemas"]["EventStatus"];
                                subtype?: string | null;
                                type?: string | null;
                            }[];
                            next_cursor?: string | null;
                        };
                    };
                };
                /** @description No valid bearer token. */
                401: {
                    headers: {
                        [name: string]: unknown;
                    };
                    content: {
                        "application/problem+json": components["schemas"]["Problem"];
                    };
                };
                /** @description No such resource, or an org the caller is not a member of. */
                404: {
                    headers: {
                        [name: string]: unknown;
                    };
                    content: {
                        "application/problem+json": components["schemas"]["Problem"];
                    };
                };
                /** @description Rate limited; see Retry-After and RateLimit-*. */
                429: {
                    headers: {
                        [name: string]: unknown;
                    };
                    content: {
                        "application/problem+json": components["schemas"]["Problem"];
                    };
                };
                /** @description An error, as RFC 9457 problem+json. */
                default: {
                    headers: {
                        [name: string]: unknown;
                    };
                    content: {
                        "application/problem+json": components["schemas"]["Problem"];
                    };
                };
            };
        };
        put?: never;
        post?: never;
        delete?: never;
        options?: never;
        head?: never;
        patch?: never;
        trace?: never;
    };
}
export type webhooks = Record<string, never>;
export interface components {
    schemas: {
        Agent: {
            channels: string[];
            /** Format: uuid */
            connection_id?: string | null;
            /** Format: date-time */
            created_at: string;
            /** @description A lead's message containing one of these (any case) goes to a person. */
            handoff_keywords: string[];
            /** Format: uuid */
            id: string;
            instructions: string;
            /** Format: int32 */
            max_tokens: number;
            /**
             * Format: int32
             * @description After this many answers in a conversation, a person takes over.
             */
            max_turns?: number | null;
            model: string;
            name: string;
            /** @description Sent at once outside working hours (else the answer waits for the next opening). */
            off_hours_reply?: string | null;
            /** Format: uuid */
            org_id: string;
            /**
             * Format: int32
             * @description Messages within this many seconds of each other get one answer (0–3600).
             */
            response_delay_secs: number;
            schedule?: string | null;
            settings: Record<string, unknown>;
            status: components["schemas"]["AgentStatus"];
            /** Format: double */
            temperature: number;
            /** Format: date-time */
            updated_at: string;
            /** @description `{timezone, days: {mon: [["09:00","18:00"]], …}}`; `null`: always open. */
            working_hours?: Record<string, unknown> | null;
        };
        AgentList: {
            data: components["schemas"]["Agent"][];
            next_cursor?: string | null;
            /**
             * Format: int64
             * @description How many agents match the filters, over all pages.
             */
            total: number;
        };
        /** @enum {string} */
        AgentStatus: "active" | "inactive" | "draft";
        /**
         * @description The org's settings; `null` fields use the deployment's (`AI_*`). The key never comes
         *     back, only whether one is set.
         */
        AiSettingsView: {
            api_key_configured: boolean;
            base_url?: string | null;
            chat_model?: string | null;
            embedding_model?: string | null;
            /**
             * @description Where the org's calls go now: `org` (its own base URL), `deployment` (the
             *     service's provider) or `none` (AI features off).
             */
            provider: string;
            /** Format: date-time */
            updated_at?: string | null;
        };
        Asset: {
            /**
             * Format: uuid
             * @description The agent it is for; org-wide when absent.
             */
            agent_id?: string | null;
            /** Format: int32 */
            chunks_count: number;
            content_type: string;
            /** Format: date-time */
            created_at: string;
            /** @description Whether its chunks carry embeddings (vector search), or only full text. */
            embedded: boolean;
            /** @description Why processing failed, readable. */
            error?: string | null;
            filename: string;
            format: components["schemas"]["AssetFormat"];
            /** Format: uuid */
            id: string;
            /** Format: uuid */
            org_id: string;
            /**
             * @description `{stage, done, total}`: stage is one of queued, extracting, chunking, embedding,
             *     writing, indexed, failed; done/total count chunks.
             */
            progress: Record<string, unknown>;
            /** @description Hex SHA-256 of the bytes; the same bytes twice in an org are one asset. */
            sha256: string;
            /** Format: int64 */
            size_bytes: number;
            status: components["schemas"]["AssetStatus"];
            /** Format: date-time */
            updated_at: string;
        };
        /**
         * @description What happened to a knowledge asset: its status, or `deleted`.
         * @enum {string}
         */
        AssetChange: "queued" | "processing" | "indexed" | "failed" | "deleted";
        /** @description `event: asset` — a knowledge file's status or indexing progress changed. */
        AssetEvent: {
            /** Format: uuid */
            asset_id: string;
            /** Format: int64 */
            done: number;
            /** @description `queued`, `extracting`, `chunking`, `embedding`, `writing`, `indexed` or `failed`. */
            stage: string;
            status: components["schemas"]["AssetChange"];
            /** Format: int64 */
            total: number;
        };
        /**
         * @description The file formats the knowledge base reads, judged by content.
         * @enum {string}
         */
        AssetFormat: "text" | "markdown" | "html" | "pdf" | "docx";
        /**
         * @description A knowledge asset's state: `queued` until its job starts, `processing`, then
         *     `indexed` (searchable) or `failed` (with a readable `error`).
         * @enum {string}
         */
        AssetStatus: "queued" | "processing" | "indexed" | "failed";
        Attachment: {
            name: string;
            url: string;
        };
        /** @enum {string} */
        Channel: "chat" | "email";
        ChatChannelView: {
            bot_id: string;
            bot_name: string;
            scope_id: string;
            /** @description The secret is stored (it is never shown). */
            secret_configured: boolean;
        };
        ChatMessage: {
            content: string;
            role: components["schemas"]["ChatRole"];
        };
        /** @enum {string} */
        ChatRole: "user" | "assistant";
        Check: {
            error?: string | null;
            /** Format: int64 */
            latency_ms: number;
            status: string;
        };
        Checks: {
            postgres: components["schemas"]["Check"];
            redis: components["schemas"]["Check"];
            /**
             * @description `off` in a process that runs no jobs; `fail` when a lane's workers are not running
             *     or have not reached Redis for more than 5 s.
             */
            workers: components["schemas"]["Check"];
        };
        /** @description A connection as clients see it: never a token. */
        Connection: {
            /** Format: int64 */
            account_id?: number | null;
            base_domain: string;
            /** Format: date-time */
            created_at: string;
            has_refresh_token: boolean;
            /** Format: uuid */
            id: string;
            last_error?: string | null;
            /** Format: uuid */
            org_id: string;
            provider: components["schemas"]["Provider"];
            scope?: string | null;
            status: components["schemas"]["ConnectionStatus"];
            /** @description `{status, pipelines: {status, started_at, finished_at, count, error}, contacts: {…}}` */
            sync: Record<string, unknown>;
            /** Format: date-time */
            token_expires_at?: string | null;
            /** Format: date-time */
            updated_at: string;
        };
        ConnectionCreated: components["schemas"]["Connection"] & {
            jobs: components["schemas"]["Job"][];
            /** @description The webhook address to configure in Kommo; shown only now. */
            webhook_url: string;
        };
        /**
         * @description `event: connection` — a CRM connection's status changed (connected, error,
         *     disconnected).
         */
        ConnectionEvent: {
            /** Format: uuid */
            connection_id: string;
            status: components["schemas"]["ConnectionStatus"];
        };
        /**
         * @description A CRM connection's state: `pending` until its tokens are stored, `connected`,
         *     `error` when Kommo refused its grant (reconnect it), `disconnected`.
         * @enum {string}
         */
        ConnectionStatus: "pending" | "connected" | "error" | "disconnected";
        Conversation: {
            /** Format: uuid */
            agent_id?: string | null;
            /** @description Kommo's chat id. */
            chat_id: string;
            /** Format: uuid */
            connection_id: string;
            /** Format: int64 */
            contact_id?: number | null;
            /** Format: date-time */
            created_at: string;
            handoff_reason?: string | null;
            /** Format: uuid */
            id: string;
            /** Format: date-time */
            last_message_at: string;
            /** @description The lead as last read from Kommo. */
            lead?: Record<string, unknown> | null;
            /** Format: int64 */
            lead_id?: number | null;
            /** @description Why the agent is not answering right now, when it is not. */
            notice?: string | null;
            /** Format: uuid */
            org_id: string;
            /** @description telegram, whatsapp, instagram, … */
            origin?: string | null;
            /**
             * Format: date-time
             * @description When a reply waiting on the response delay or working hours is due.
             */
            reply_due_at?: string | null;
            status: components["schemas"]["ConversationStatus"];
            talk_id?: string | null;
            /** Format: date-time */
            updated_at: string;
        };
        ConversationDetail: components["schemas"]["Conversation"] & {
            /** @description Oldest first. */
            messages: components["schemas"]["Paginated_Message"];
        };
        /**
         * @description `event: conversation.handoff` — a conversation was handed to a person
         *     (`handed_off`) or given back to the agent (`active`).
         */
        ConversationHandoffEvent: {
            /** Format: uuid */
            conversation_id: string;
            status: components["schemas"]["ConversationStatus"];
        };
        /**
         * @description `event: conversation.message` — a message was recorded in a conversation: one from the
         *     lead (`in`), or the agent's (`out`).
         */
        ConversationMessageEvent: {
            /** Format: uuid */
            conversation_id: string;
            /** @description `in` or `out`. */
            direction: string;
            /** @description `inbound`, `reply`, `off_hours` or `handoff`. */
            kind: string;
            /** Format: uuid */
            message_id: string;
        };
        /** @enum {string} */
        ConversationStatus: "active" | "handed_off";
        CreateAgent: {
            /** @description Default `["chat"]`. */
            channels?: string[] | null;
            /**
             * Format: uuid
             * @description A CRM connection of the same org.
             */
            connection_id?: string | null;
            handoff_keywords?: string[] | null;
            /** @description The agent's goal and instructions (`goal` is accepted as an alias). */
            instructions?: string | null;
            /**
             * Format: int32
             * @description 1..=32000, default 2048.
             */
            max_tokens?: number | null;
            /**
             * Format: int32
             * @description 1..=1000.
             */
            max_turns?: number | null;
            model: string;
            name: string;
            off_hours_reply?: string | null;
            /**
             * Format: int32
             * @description 0..=3600, default 0.
             */
            response_delay_secs?: number | null;
            schedule?: string | null;
            /** @description A JSON object of at most 64 KiB. */
            settings?: Record<string, unknown> | null;
            status?: components["schemas"]["AgentStatus"] | null;
            /**
             * Format: double
             * @description 0..=2, default 0.7.
             */
            temperature?: number | null;
            /** @description `{timezone, days: {mon: [["09:00","18:00"]], …}}`; absent: always open. */
            working_hours?: Record<string, unknown> | null;
        };
        CreateConnection: {
            /** @description A Kommo long-lived token, or an access token (write-only). */
            access_token: string;
            /** @description The account's host, e.g. `acme.kommo.com` (a subdomain of kommo.com or amocrm.ru). */
            base_domain: string;
            /**
             * Format: int64
             * @description Seconds until the access token expires (absent: does not expire); at most ten
             *     years, which also keeps the expiry time representable.
             */
            expires_in?: number | null;
            /** @description Only `kommo`. */
            provider?: string | null;
            /** @description With an access token from OAuth: its refresh token (write-only). */
            refresh_token?: string | null;
        };
        /** @description `{"type": "...", ...fields of that type}`; the fields are checked per type. */
        CreateJob: Record<string, unknown>;
        CreateOrg: {
            name: string;
            /** @description Lower-case letters, digits and dashes; generated from the name when absent. */
            slug?: string | null;
        };
        CredentialsView: {
            client_id?: string | null;
            configured: boolean;
            provider: string;
            redirect_uri?: string | null;
            /** Format: date-time */
            updated_at?: string | null;
        };
        CrmStatus: {
            connection?: components["schemas"]["Connection"] | null;
            connection_configured: boolean;
            credentials: components["schemas"]["CredentialsView"];
            credentials_configured: boolean;
            provider: string;
            sync: Record<string, unknown>;
        };
        /**
         * @description Which way an edge points from the entity being shown.
         * @enum {string}
         */
        Direction: "outgoing" | "incoming";
        Entity: {
            /** Format: date-time */
            created_at: string;
            description: string;
            /** Format: uuid */
            id: string;
            /** @description As first written in the org's files. */
            name: string;
            /** @description What mentions are merged by: lower case, whitespace collapsed, punctuation trimmed. */
            normalized_name: string;
            type: components["schemas"]["EntityType"];
            /** Format: date-time */
            updated_at: string;
        };
        /** @description A chunk an entity was found in. */
        EntityChunk: {
            /** Format: uuid */
            asset_id: string;
            /** Format: uuid */
            chunk_id: string;
            /** @description The chunk's first 300 characters. */
            excerpt: string;
            filename: string;
            /** Format: int32 */
            position: number;
        };
        /**
         * @description An entity with its relationships (both directions) and the chunks it was found in,
         *     the first 100 of each.
         */
        EntityDetail: components["schemas"]["Entity"] & {
            chunks: components["schemas"]["EntityChunk"][];
            /** @description Whether it was found in more chunks than listed. */
            more_chunks: boolean;
            /** @description Whether it has more relationships than listed. */
            more_relationships: boolean;
            relationships: components["schemas"]["EntityRelationship"][];
        };
        EntityRelationship: {
            /** @description The chunks it was found in (the first 20). */
            chunk_ids: string[];
            description: string;
            direction: components["schemas"]["Direction"];
            entity: components["schemas"]["RelatedEntity"];
            /** Format: uuid */
            id: string;
            type: string;
        };
        /**
         * @description What a knowledge-graph entity is: the fixed list the model chooses from (spec §12) and
         *     the `knowledge_entities.type` CHECK allows.
         * @enum {string}
         */
        EntityType: "person" | "organization" | "product" | "service" | "location" | "event" | "concept" | "price" | "policy" | "other";
        /**
         * @description A webhook event's state: `received` until its job parsed it, then `processed` or
         *     `failed`.
         * @enum {string}
         */
        EventStatus: "received" | "processed" | "failed";
        FieldError: {
            field: string;
            message: string;
        };
        Handoff: {
            /** @description Why a person takes over (shown on the conversation). */
            reason?: string | null;
        };
        Job: {
            /** Format: int32 */
            attempts: number;
            /** Format: date-time */
            created_at: string;
            error?: string | null;
            /** Format: date-time */
            finished_at?: string | null;
            /** Format: uuid */
            id: string;
            /** Format: int32 */
            max_attempts: number;
            /** Format: uuid */
            org_id: string;
            payload: Record<string, unknown>;
            result?: Record<string, unknown> | null;
            /**
             * Format: date-time
             * @description When a job waiting for its next attempt becomes due.
             */
            run_after?: string | null;
            /** Format: date-time */
            started_at?: string | null;
            status: components["schemas"]["JobStatus"];
            type: string;
        };
        /**
         * @description `event: job` — a job changed status (queued, running, succeeded, failed, cancelled).
         *     A retry is `queued` again with the attempts made so far.
         */
        JobEvent: {
            /**
             * Format: int32
             * @description Attempts made so far (when known).
             */
            attempts?: number | null;
            /** Format: uuid */
            job_id: string;
            status: components["schemas"]["JobStatus"];
            type: string;
        };
        /** @enum {string} */
        JobStatus: "queued" | "running" | "succeeded" | "failed" | "cancelled";
        /** @description What knowledge search can do here (never a reason to be unready). */
        Knowledge: {
            /** @description Whether the deployment has a model provider (`AI_BASE_URL`). */
            ai_provider: boolean;
            /** @description Whether the database has pgvector (`null` when PostgreSQL did not answer). */
            pgvector?: boolean | null;
            /**
             * @description `hybrid` with pgvector and a deployment provider; `fulltext` otherwise (an org
             *     with a provider of its own still gets hybrid search where pgvector is).
             */
            search: string;
        };
        Live: {
            status: string;
        };
        /**
         * @description One server-sent event as the client reads it: `event:` names the kind, `data:` is
         *     JSON of the kind's schema, `id:` is the event's id (for `Last-Event-ID`). Documented
         *     for clients (the OpenAPI document's `LiveEvent`); the stream writes the frames itself.
         */
        LiveEvent: {
            data: components["schemas"]["JobEvent"];
            /** @enum {string} */
            event: "job";
        } | {
            data: components["schemas"]["AssetEvent"];
            /** @enum {string} */
            event: "asset";
        } | {
            data: components["schemas"]["ConversationMessageEvent"];
            /** @enum {string} */
            event: "conversation.message";
        } | {
            data: components["schemas"]["ConversationHandoffEvent"];
            /** @enum {string} */
            event: "conversation.handoff";
        } | {
            data: components["schemas"]["ConnectionEvent"];
            /** @enum {string} */
            event: "connection";
        } | {
            data: components["schemas"]["ResetEvent"];
            /** @enum {string} */
            event: "reset";
        };
        Me: {
            email?: string | null;
            orgs: components["schemas"]["OrgMembership"][];
            /** Format: uuid */
            user_id: string;
        };
        Member: {
            /** Format: date-time */
            created_at: string;
            role: components["schemas"]["Role"];
            /** Format: date-time */
            updated_at: string;
            /** Format: uuid */
            user_id: string;
        };
        MessageContent: {
            attachments?: components["schemas"]["Attachment"][] | null;
            body: string;
            subject?: string | null;
        };
        OauthCallback: {
            code: string;
            /** @description The account's host as Kommo reports it, e.g. `acme.kommo.com`. */
            referer: string;
            state: string;
        };
        OauthConnected: {
            connection: components["schemas"]["Connection"];
            /** @description The webhook address to configure in Kommo; shown only now. */
            webhook_url: string;
        };
        OauthStarted: {
            auth_url: string;
            /** Format: date-time */
            expires_at: string;
            state: string;
        };
        Org: {
            /** Format: date-time */
            created_at: string;
            /** Format: uuid */
            id: string;
            name: string;
            slug: string;
            /** Format: date-time */
            updated_at: string;
        };
        OrgMembership: {
            /** Format: uuid */
            id: string;
            name: string;
            role: components["schemas"]["Role"];
            slug: string;
        };
        OrgWithRole: components["schemas"]["Org"] & {
            /** @description The caller's role in this org. */
            role: components["schemas"]["Role"];
        };
        Paginated_Message: {
            data: {
                /**
                 * Format: uuid
                 * @description Inbound: the answer that covered it. Outbound: the last inbound message it answers.
                 */
                answered_by?: string | null;
                author?: string | null;
                /** Format: uuid */
                conversation_id: string;
                /** Format: date-time */
                created_at: string;
                /** @description Where it went in Kommo (note id, chat message id). */
                delivery: Record<string, unknown>;
                /**
                 * @description Inbound: `received` (awaiting an answer), `answered` or `ignored`. Outbound:
                 *     `pending`, `delivered` or `failed`.
                 */
                delivery_status: string;
                /** @description `in` from the lead, `out` from the agent. */
                direction: string;
                /** @description Why it was ignored or failed. */
                error?: string | null;
                /** Format: uuid */
                id: string;
                /** @description `inbound`, `reply`, `off_hours` or `handoff`. */
                kind: string;
                kommo_message_id?: string | null;
                /** Format: int32 */
                latency_ms?: number | null;
                model?: string | null;
                /** Format: uuid */
                reply_to?: string | null;
                /**
                 * Format: date-time
                 * @description When Kommo says it was written (inbound).
                 */
                sent_at?: string | null;
                /** @description The knowledge chunks the answer drew on. */
                sources: Record<string, unknown>[];
                text: string;
                /** Format: int32 */
                tokens_in?: number | null;
                /** Format: int32 */
                tokens_out?: number | null;
                tool_calls: Record<string, unknown>[];
            }[];
            next_cursor?: string | null;
        };
        PipelineList: {
            data: components["schemas"]["PipelineView"][];
        };
        PipelineView: {
            /** Format: int64 */
            external_id: number;
            /** Format: uuid */
            id: string;
            is_archive: boolean;
            is_main: boolean;
            name: string;
            /** Format: int32 */
            sort: number;
            /** @description `[{id, external_id, name, sort, color, type}]`, in Kommo's order. */
            stages: Record<string, unknown>[];
            /** Format: date-time */
            synced_at: string;
        };
        /** @description The problem document, as sent and as documented in the OpenAPI schema. */
        Problem: {
            code: string;
            detail: string;
            errors?: components["schemas"]["FieldError"][];
            request_id?: string | null;
            /** Format: int32 */
            status: number;
            title: string;
            type: string;
        };
        /**
         * @description The CRMs the service connects to.
         * @enum {string}
         */
        Provider: "kommo";
        /**
         * @description The whole settings: an absent or `null` field uses the deployment's. `api_key`
         *     absent keeps the stored key as long as `base_url` stays the same (a key is never sent
         *     to a host it was not given for); `null` removes it.
         */
        PutAiSettings: {
            /** @description Write-only. */
            api_key?: string | null;
            /**
             * @description An OpenAI-compatible API root, e.g. `https://api.openai.com/v1`. In production:
             *     https, and not a loopback, private or link-local address.
             */
            base_url?: string | null;
            chat_model?: string | null;
            embedding_model?: string | null;
        };
        PutChatChannel: {
            /** @description The sender id the agent's messages come from. */
            bot_id: string;
            bot_name: string;
            /** @description The channel's scope id, as Kommo gives it when the channel is connected. */
            scope_id: string;
            /** @description The channel's secret (signs every request); never shown again. */
            secret: string;
        };
        /** @description A body field that must be an absolute http(s) URL. */
        PutCredentials: {
            client_id: string;
            /** @description Write-only: stored encrypted, never returned. */
            client_secret: string;
            redirect_uri?: string | null;
        };
        PutMember: {
            role: components["schemas"]["Role"];
        };
        QueuedJobs: {
            jobs: components["schemas"]["Job"][];
        };
        Readiness: {
            checks: components["schemas"]["Checks"];
            draining: boolean;
            knowledge: components["schemas"]["Knowledge"];
            /** @description `ok` or `fail`. */
            status: string;
        };
        RefreshedToken: {
            /** Format: date-time */
            token_expires_at?: string | null;
        };
        /** @description The entity at the other end of an edge. */
        RelatedEntity: {
            /** Format: uuid */
            id: string;
            name: string;
            type: components["schemas"]["EntityType"];
        };
        /**
         * @description `event: reset` — the stream could not resume where the client left off (its
         *     `Last-Event-ID` is older than what is kept, or unknown): what is kept follows, and the
         *     client should refetch what it shows. Its `id` is the client's.
         */
        ResetEvent: {
            reason: string;
        };
        /**
         * @description A member's role in an org, lowest first (the order is the rank).
         * @enum {string}
         */
        Role: "member" | "admin" | "owner";
        Route: {
            /** Format: uuid */
            connection_id: string;
            /** Format: int64 */
            pipeline_id: number;
            stage_ids: components["schemas"]["Stages"];
        };
        SearchHit: {
            /** Format: uuid */
            asset_id: string;
            /** Format: uuid */
            chunk_id: string;
            content: string;
            filename: string;
            metadata: Record<string, unknown>;
            /** Format: double */
            score: number;
        };
        /** @enum {string} */
        SearchMode: "hybrid" | "fulltext" | "vector";
        SearchRequest: {
            /**
             * Format: uuid
             * @description Search this agent's files and the org-wide ones.
             */
            agent_id?: string | null;
            /**
             * Format: int64
             * @description 1..=50, default 8.
             */
            limit?: number | null;
            mode?: components["schemas"]["SearchMode"] | null;
            /** @description Words, "phrases", -excluded, or: web-search syntax, Russian or English. */
            query: string;
        };
        SearchResults: {
            data: components["schemas"]["SearchHit"][];
            /** @description What ran: `hybrid` falls back to `fulltext` where there are no embeddings. */
            mode: components["schemas"]["SearchMode"];
            /**
             * @description Why a hybrid search ran as full-text only (no pgvector, no model provider, no
             *     embedded chunks, or the provider failed just now).
             */
            notice?: string | null;
        };
        SendMessage: {
            channel: components["schemas"]["Channel"];
            /**
             * Format: uuid
             * @description Default: the org's connected Kommo account.
             */
            connection_id?: string | null;
            /** Format: int64 */
            deal_id: number;
            message: components["schemas"]["MessageContent"];
        };
        SetStatus: {
            status: components["schemas"]["AgentStatus"];
        };
        /** @description A passage the answer may draw on, kept on the outbound message as its source. */
        Source: {
            /** Format: uuid */
            asset_id: string;
            /** Format: uuid */
            chunk_id: string;
            filename: string;
            heading?: string | null;
            /**
             * Format: int64
             * @description The page of a PDF, the heading of a section, when known.
             */
            page?: number | null;
            /** Format: double */
            score: number;
        };
        /** @description Stages of a pipeline: some, or every one (also those added later). */
        Stages: string | number[];
        StartOauth: {
            /** @description Default: the credentials' redirect URI, else `OAUTH_REDIRECT_URL`. */
            redirect_uri?: string | null;
        };
        SyncRequest: {
            scope: components["schemas"]["SyncScope"];
        };
        /** @enum {string} */
        SyncScope: "pipelines" | "contacts" | "all";
        TestChat: {
            /** @description The conversation so far, oldest first; the last one is the lead's (`user`). */
            messages: components["schemas"]["ChatMessage"][];
        };
        TestChatAnswer: {
            model: string;
            reply: string;
            /** @description The passages the answer was given. */
            sources: components["schemas"]["Source"][];
            /** Format: int32 */
            tokens_in: number;
            /** Format: int32 */
            tokens_out: number;
            /** @description Tool calls the model made (not carried out in the test chat). */
            tool_calls: components["schemas"]["ToolUse"][];
        };
        /** @description A tool call as recorded on the outbound message and shown by the test chat. */
        ToolUse: {
            arguments?: Record<string, unknown>;
            error?: string | null;
            /** @description What will be done; absent when the call was refused. */
            intent?: Record<string, unknown> | null;
            name: string;
        };
        Totals: {
            /** Format: int64 */
            completion_tokens: number;
            /** Format: int64 */
            prompt_tokens: number;
            /** Format: int64 */
            requests: number;
        };
        /** @description Only the fields present change; `null` clears `connection_id` and `schedule`. */
        UpdateAgent: {
            channels?: string[];
            /** Format: uuid */
            connection_id?: string | null;
            handoff_keywords?: string[];
            instructions?: string;
            /** Format: int32 */
            max_tokens?: number;
            /** Format: int32 */
            max_turns?: number | null;
            model?: string;
            name?: string;
            off_hours_reply?: string | null;
            /** Format: int32 */
            response_delay_secs?: number;
            schedule?: string | null;
            settings?: Record<string, unknown>;
            status?: components["schemas"]["AgentStatus"];
            /** Format: double */
            temperature?: number;
            /** @description `null`: always open. */
            working_hours?: Record<string, unknown> | null;
        };
        /** @description What an upload carries: `file` (required) and `agent_id` (optional). */
        UploadForm: {
            /**
             * Format: uuid
             * @description An agent of this org the file is for; org-wide without it.
             */
            agent_id?: string | null;
            /** Format: binary */
            file: Blob;
        };
        /** @description The asset and the job that indexes it (`null` when the bytes were already there). */
        Uploaded: {
            asset: components["schemas"]["Asset"];
            job?: components["schemas"]["Job"] | null;
        };
        Usage: {
            /**
             * Format: int64
             * @description `null` without a daily quota.
             */
            daily_token_quota?: number | null;
            /** @description Per day, kind and model, oldest first. */
            data: components["schemas"]["UsageDay"][];
            /** Format: date */
            from: string;
            /** Format: date */
            to: string;
            /**
             * Format: int64
             * @description Tokens used today (UTC): the number the quota is checked against.
             */
            tokens_today: number;
            totals: components["schemas"]["Totals"];
        };
        /** @description One day's calls of one kind and model. */
        UsageDay: {
            /** Format: int64 */
            completion_tokens: number;
            /** Format: date */
            day: string;
            /** @description `embeddings`, `graph`, `reply` or `test_chat`. */
            kind: string;
            model: string;
            /** Format: int64 */
            prompt_tokens: number;
            /** Format: int64 */
            requests: number;
        };
        WebhookAccepted: {
            /** @description `accepted`, or `duplicate` for a body already accepted within 24 h. */
            status: string;
        };
        WebhookSecret: {
            /** @description The new webhook address; the previous one stops working now. */
            webhook_url: string;
        };
    };
    responses: never;
    parameters: never;
    requestBodies: never;
    headers: never;
    pathItems: never;
}
export type $defs = Record<string, never>;
export type operations = Record<string, never>;
