/** Alert rules: one implementation for the cloud and the gateway, in shared/alerts/rules.ts. */
export * from '../../shared/alerts/rules.js';
