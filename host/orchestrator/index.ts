/** The VM life cycle: state machine, orchestrator, plugin images, event bus. */

export * from './events.js';
export * from './keyed-mutex.js';
export * from './orchestrator.js';
export * from './plugin-images.js';
export * from './ports.js';
export { assertTransition, canTransition, hasProcess, isAtRest, stateAfterExit, TRANSITIONS } from './state.js';
