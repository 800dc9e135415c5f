"""Adam with upstream's beta1 switch (vat_tf train_semisup.py).

TF1 ``AdamOptimizer(learning_rate=lr, beta1=mom)`` is fed lr and beta1 per
epoch; its bias correction uses an accumulator ``beta1_power`` multiplied by
whichever beta1 is fed at each step. Keras' Adam holds beta1 as a Python
float baked into the compiled step and uses beta1**t; this subclass keeps
beta1 in a variable and reproduces the accumulator, so the schedule callback
can switch beta1 at ``epoch_decay_start`` without retracing.
"""
import keras
import tensorflow as tf


@keras.saving.register_keras_serializable("lvat_tf")
class UpstreamAdam(keras.optimizers.Adam):
    """Adam (epsilon-hat form, eps 1e-8) with a variable beta1 and TF1's beta1_power."""

    def __init__(self, learning_rate=1e-3, beta_1=0.9, beta_2=0.999, epsilon=1e-8, **kwargs):
        super().__init__(learning_rate=learning_rate, beta_1=beta_1, beta_2=beta_2,
                         epsilon=epsilon, **kwargs)
        self._initial_beta_1 = float(beta_1)

    def build(self, var_list):
        if self.built:
            return
        super().build(var_list)
        self.beta_1_var = self.add_variable((), initializer=keras.initializers.Constant(
            self._initial_beta_1), dtype="float32", name="beta_1_current",
            aggregation="only_first_replica")
        # TF1's accumulator: created with the beta1 fed at initialisation.
        # Assigned inside the replicated step (tf.distribute): the first
        # replica's value, like Keras' own iteration counter.
        self.beta_1_power = self.add_variable((), initializer=keras.initializers.Constant(
            self._initial_beta_1), dtype="float32", name="beta_1_power",
            aggregation="only_first_replica")

    def set_beta_1(self, value: float):
        self.beta_1_var.assign(value)

    def apply(self, grads, trainable_variables=None):
        # TF1 ApplyAdam: step t's bias correction uses the accumulator *before*
        # the step, beta1_init * prod_{s<t} beta1_s, and the accumulator is then
        # multiplied by the beta1 fed at step t. (Until this was checked against
        # vat_tf_train.npz the port multiplied first, i.e. used prod_{s<=t}
        # beta1_s: the same while beta1 is constant, 0.9/0.5 apart in 1 - power
        # from the beta1 switch on.)
        if not self.built:
            self.build(trainable_variables)
        out = super().apply(grads, trainable_variables)
        self.beta_1_power.assign(self.beta_1_power * self.beta_1_var)
        return out

    def update_step(self, gradient, variable, learning_rate):
        # One fused ApplyAdam kernel per variable: the op TF1's AdamOptimizer (and so vat_tf's
        # graph) runs, with the same formula (lr_t = lr sqrt(1 - b2^t) / (1 - b1_power);
        # m += (g - m)(1 - b1); v += (g^2 - v)(1 - b2); w -= lr_t m / (sqrt(v) + eps)).
        # Written element-wise (the port's first form) it built ~20 ops per variable (a
        # quarter of the train step's tracing) and made ~10 passes over every weight per step.
        dtype = variable.dtype
        index = self._get_variable_index(variable)
        step = tf.cast(self.iterations + 1, dtype)
        tf.raw_ops.ResourceApplyAdam(
            var=_handle(variable), m=_handle(self._momentums[index]),
            v=_handle(self._velocities[index]),
            beta1_power=tf.cast(self.beta_1_power, dtype),
            beta2_power=tf.pow(tf.cast(self.beta_2, dtype), step),
            lr=tf.cast(learning_rate, dtype), beta1=tf.cast(self.beta_1_var, dtype),
            beta2=tf.cast(self.beta_2, dtype), epsilon=tf.cast(self.epsilon, dtype),
            grad=tf.cast(tf.convert_to_tensor(gradient), dtype))


def _handle(variable):
    """The resource handle of a Keras or tf variable (inside ``Strategy.extended.update`` a
    mirrored variable answers with its component on the device being updated)."""
    if isinstance(variable, keras.Variable):
        variable = variable.value
    return variable.handle


def upstream_schedule(epoch: int, learning_rate: float, num_epochs: int, epoch_decay_start: int,
                      mom1: float, mom2: float, lr_decay: float = 1.0):
    """(lr, beta1) for a 0-based epoch, as vat_tf train_semisup.py.

    Constant lr and beta1 = mom1 before ``epoch_decay_start``; from it on
    lr0 * (num_epochs - epoch) / (num_epochs - epoch_decay_start) and beta1 = mom2.
    ``lr_decay`` < 1 multiplies that lr by ``lr_decay ** epoch`` (the VAT authors'
    Theano scripts decay lr by 0.9 after every epoch; 1 leaves vat_tf's schedule).
    """
    factor = lr_decay ** epoch
    if epoch < epoch_decay_start or num_epochs == epoch_decay_start:
        return learning_rate * factor, mom1
    decayed = learning_rate * float(num_epochs - epoch) / float(num_epochs - epoch_decay_start)
    return decayed * factor, mom2
