/** The alert state machine: shared/alerts/state.ts (the gateway steps the same one). */
export * from '../../shared/alerts/state.js';
