/** Alert scopes: shared/alerts/scope.ts (the gateway uses them too). */
export * from '../../shared/alerts/scope.js';
