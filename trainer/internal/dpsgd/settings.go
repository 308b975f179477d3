package dpsgd

import "fmt"

// SetDatasetSize changes N, the number of examples a step's Poisson sample
// was drawn from, before the OptimStep it applies to: the noised sum is
// divided by q·N. The trainer service samples from the pool a client
// sends, whose size it learns per step.
func (e *Engine) SetDatasetSize(n int) error {
	if n <= 0 {
		return fmt.Errorf("%w: dataset size %d must be > 0", ErrInvalidConfig, n)
	}
	e.cfg.DatasetSize = n
	return nil
}

// SetOptimizer changes AdamW's hyper-parameters for the next steps (the
// moments are kept); zero values keep the current ones.
func (e *Engine) SetOptimizer(lr, beta1, beta2, eps, weightDecay float64) error {
	c := e.cfg
	if lr != 0 {
		c.LR = lr
	}
	if beta1 != 0 {
		c.Beta1 = beta1
	}
	if beta2 != 0 {
		c.Beta2 = beta2
	}
	if eps != 0 {
		c.Eps = eps
	}
	if weightDecay != 0 {
		c.WeightDecay = weightDecay
	}
	if err := c.Validate(); err != nil {
		return err
	}
	e.cfg = c
	return nil
}
