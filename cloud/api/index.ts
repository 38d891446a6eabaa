/** The cloud's HTTP API pieces: bearer auth with roles, and who a caller is. Routes are plugins registered on CloudServer. */
export { Authenticator, allows, type Role } from './auth.js';
export { WHOAMI_PATH, registerWhoamiRoute, type WhoamiRouteDeps } from './whoami.js';
