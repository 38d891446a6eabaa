/** The cloud's HTTP API pieces: bearer auth with roles. Routes are plugins registered on CloudServer. */
export { Authenticator, DEFAULT_AUTH_OPTIONS, allows, type AuthOptions, type Role } from './auth.js';
